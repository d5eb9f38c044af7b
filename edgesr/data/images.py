"""Reading and writing RGB images with one documented set of conversions, and tensor helpers.

Every image that enters edgesr goes through `read_image`, so an odd file (16-bit, grey, with
alpha, truncated) behaves the same in training, evaluation and the CLI, and a bad one fails with
an error that names it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from edgesr.errors import DataError
from edgesr.files import atomic_path

__all__ = [
    "MAX_PIXELS", "ImageError", "image_size", "max_pixels", "read_image", "to_tensor", "to_uint8",
    "write_image",
]  # fmt: skip

# Images above this many pixels are refused before any decoding (a PNG can declare 60000x60000 in
# a few hundred bytes: a decompression bomb). 2^28 = 268 megapixels: above the largest phone
# cameras (200 MP) and any SR data set. Raise it with EDGESR_MAX_PIXELS for genuine larger images.
MAX_PIXELS = 1 << 28


def max_pixels() -> int:
    raw = os.environ.get("EDGESR_MAX_PIXELS")
    if raw is None:
        return MAX_PIXELS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise DataError(f"EDGESR_MAX_PIXELS={raw!r}: expected a whole number of pixels above 0")
    return value

_GREY_8BIT = {"1", "L"}
_GREY_16BIT = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_WITH_ALPHA = {"RGBA", "RGBa", "LA", "La", "PA"}
_CONVERTIBLE = {"RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}


class ImageError(DataError):
    """An image file that cannot be used; the message starts with the file's path."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        super().__init__(f"{path}: {reason}")


def _open(path: Path) -> Image.Image:
    if not path.exists():
        raise ImageError(path, "file not found")
    if not path.is_file():
        raise ImageError(path, "not a file")
    # edgesr checks the size itself below, with its limit and a message naming the file; Pillow's own
    # check (a warning at 89 MP, an error with a bare traceback at 179 MP) is off for this call only
    pillow_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        img = Image.open(path)
    except UnidentifiedImageError as exc:
        raise ImageError(path, "not a recognised image file (corrupt, or not an image)") from exc
    except OSError as exc:
        raise ImageError(path, f"cannot open: {exc}") from exc
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit
    w, h = img.size
    if w * h > (limit := max_pixels()):
        img.close()
        raise ImageError(
            path,
            f"{w}x{h} is {w * h / 1e6:.0f} megapixels, above edgesr's limit of {limit / 1e6:.0f} (a guard "
            f"against decompression bombs); if the image is genuine, set EDGESR_MAX_PIXELS={w * h}",
        )
    return img


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(height, width) of an image file, read from its header only (no pixel decoding)."""
    path = Path(path)
    with _open(path) as img:
        w, h = img.size
    return h, w


def _to_rgb_array(img: Image.Image, path: Path) -> np.ndarray:
    mode = img.mode
    if mode in _GREY_8BIT:
        grey = np.asarray(img.convert("L"), dtype=np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode in _GREY_16BIT:
        # 16-bit scaled (not clipped) to 8 bits: 65535 -> 255, like MATLAB's im2uint8.
        v = np.asarray(img, dtype=np.float64)
        v = np.clip(v, 0, 65535)
        grey = np.floor(v / 257.0 + 0.5).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "F":
        # Float images follow PIL's own "F" -> "L" rule: values are on the 0..255 scale.
        v = np.asarray(img, dtype=np.float64)
        grey = np.floor(np.clip(np.nan_to_num(v), 0, 255) + 0.5).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode in _WITH_ALPHA or (mode in {"P", "L", "RGB"} and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float64)
        # Composite on black (i.e. premultiply by alpha): fully transparent pixels become 0.
        rgb = rgba[:, :, :3] * (rgba[:, :, 3:] / 255.0)
        return np.floor(rgb + 0.5).astype(np.uint8)
    if mode == "P" or mode in _CONVERTIBLE:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
    raise ImageError(path, f"unsupported image mode {mode!r}")


def read_image(path: str | os.PathLike[str], *, exif_orientation: bool = False) -> np.ndarray:
    """Decode an image file to a uint8 HxWx3 RGB array.

    Conversions (one rule per kind of file, so results never depend on the caller):
      - grey 8-bit ("L", and 1-bit "1" as 0/255): replicated to 3 channels;
      - grey 16/32-bit integer ("I;16*", "I", e.g. 16-bit PNG): v -> round(v / 257), clipped to
        0..65535 first, replicated to 3 channels (scaled, never clipped at 255);
      - grey float ("F"): values taken on the 0..255 scale (PIL's rule), rounded and clipped;
      - with alpha ("RGBA", "LA", "PA", or a palette/grey/RGB image with a transparency key):
        composited on BLACK, i.e. rgb * alpha / 255 rounded;
      - palette, CMYK, YCbCr, LAB, HSV: converted to RGB by PIL;
      - 48-bit RGB PNGs are reduced to 8 bits per channel by PIL itself when it opens them.
    Only the first frame of multi-frame files (GIF, TIFF) is read. EXIF orientation is ignored by
    default, as MATLAB's `imread` ignores it, so LR/HR pairs shipped by data sets stay aligned;
    `exif_orientation=True` applies it (`edgesr upscale` does: a phone photo tagged "rotate 90"
    comes out the way the phone showed it, and the output carries no orientation tag).
    Images above `max_pixels()` (EDGESR_MAX_PIXELS, default 2^28) are refused before decoding.

    Raises:
        ImageError: missing file, not an image, corrupt or truncated data, unsupported mode.
    """
    path = Path(path)
    with _open(path) as img:
        # A truncated file must fail here, not decode with a grey band at the bottom.
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            img.load()
        except Exception as exc:  # decoders raise OSError, SyntaxError, ValueError, zlib.error...
            raise ImageError(path, f"corrupt or truncated image data ({exc})") from exc
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous
        arr = _to_rgb_array(ImageOps.exif_transpose(img) if exif_orientation else img, path)
    return np.ascontiguousarray(arr)


def write_image(path: str | os.PathLike[str], array: np.ndarray, *, jpeg_quality: int = 95) -> None:
    """Write a uint8 HxWx3 RGB (or HxW grey) array atomically; the format follows the extension."""
    path = Path(path)
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise ImageError(path, f"expected a uint8 HxWx3 array, got {array.dtype} {array.shape}")
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ImageError(path, f"unknown image extension {path.suffix!r}")
    params: dict[str, object] = {"quality": jpeg_quality} if fmt == "JPEG" else {}
    # The temp file ends in ".tmp", so the format is passed explicitly rather than guessed.
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(array)).save(tmp, format=fmt, **params)


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """uint8 HxWxC (0..255) -> float32 CxHxW in [0, 1]."""
    if array.dtype != np.uint8 or array.ndim != 3:
        raise ValueError(f"to_tensor: expected a uint8 HxWxC array, got {array.dtype} {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float().div_(255.0)


def to_uint8(tensor: torch.Tensor) -> np.ndarray:
    """Float CxHxW or 1xCxHxW in [0, 1] -> uint8 HxWxC: x * 255, rounded, clamped to 0..255."""
    if tensor.dim() == 4:
        if tensor.shape[0] != 1:
            raise ValueError(f"to_uint8: expected a batch of one, got shape {tuple(tensor.shape)}")
        tensor = tensor[0]
    if tensor.dim() != 3:
        raise ValueError(f"to_uint8: expected CxHxW or 1xCxHxW, got shape {tuple(tensor.shape)}")
    q = (tensor.detach().to("cpu", torch.float64) * 255.0).round_().clamp_(0, 255)
    return np.ascontiguousarray(q.to(torch.uint8).numpy().transpose(1, 2, 0))
