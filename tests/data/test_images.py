"""Image reading rules (grey, 16-bit, alpha, palette, CMYK), clear errors, atomic writes, tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgesr.data.images import ImageError, image_size, read_image, to_tensor, to_uint8, write_image


def _rgb(h: int = 6, w: int = 5) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif", ".webp"])
def test_lossless_roundtrip(tmp_path: Path, ext: str) -> None:
    arr = _rgb()
    path = tmp_path / f"a{ext}"
    if ext == ".webp":
        Image.fromarray(arr).save(path, lossless=True)
    else:
        write_image(path, arr)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (6, 5, 3)
    np.testing.assert_array_equal(out, arr)
    assert image_size(path) == (6, 5)


def test_write_is_atomic_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "x.jpg"
    write_image(path, _rgb(16, 16))
    assert read_image(path).shape == (16, 16, 3)
    assert [p.name for p in path.parent.iterdir()] == ["x.jpg"]
    with pytest.raises(ImageError, match="unknown image extension"):
        write_image(tmp_path / "x.nope", _rgb())
    with pytest.raises(ImageError, match="uint8"):
        write_image(tmp_path / "y.png", _rgb().astype(np.float32))
    assert not (tmp_path / "y.png").exists()


def test_grey_is_replicated(tmp_path: Path) -> None:
    grey = _rgb()[:, :, 0]
    Image.fromarray(grey, mode="L").save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], grey)


def test_16bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 257, 128, 65535, 32896, 385]], dtype=np.uint16)
    # 128/257 = 0.498 -> 0; 32896/257 = 128 exactly; 385/257 = 1.498 -> 1
    expected = np.array([0, 1, 0, 255, 128, 1], dtype=np.uint8)
    path = tmp_path / "g16.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as img:
        assert img.mode in ("I;16", "I")
    out = read_image(path)
    np.testing.assert_array_equal(out[0, :, 0], expected)
    np.testing.assert_array_equal(out[:, :, 0], out[:, :, 2])
    # The same pixels as a 32-bit "I" image follow the same rule.
    Image.fromarray(values.astype(np.int32), mode="I").save(tmp_path / "g32.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "g32.tif")[0, :, 1], expected)


def test_float_grey_uses_0_255_scale(tmp_path: Path) -> None:
    values = np.array([[-3.0, 0.4, 12.5, 254.6, 300.0]], dtype=np.float32)
    Image.fromarray(values, mode="F").save(tmp_path / "f.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "f.tif")[0, :, 0], [0, 0, 13, 255, 255])


def test_alpha_is_composited_on_black(tmp_path: Path) -> None:
    rgba = np.array([[[200, 100, 50, 255], [200, 100, 50, 0], [200, 100, 50, 128]]], dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(out[0, 0], [200, 100, 50])
    np.testing.assert_array_equal(out[0, 1], [0, 0, 0])
    np.testing.assert_array_equal(out[0, 2], np.floor(np.array([200, 100, 50]) * 128 / 255 + 0.5))
    la = Image.fromarray(rgba[:, :, [0, 3]], mode="LA")
    la.save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "la.png")[0, :, 1], [200, 0, 100])


def test_palette_and_cmyk(tmp_path: Path) -> None:
    arr = _rgb()
    Image.fromarray(arr).convert("P", palette=Image.Palette.ADAPTIVE, colors=8).save(tmp_path / "p.png")
    pal = read_image(tmp_path / "p.png")
    assert pal.shape == (6, 5, 3) and pal.dtype == np.uint8
    Image.fromarray(arr).convert("CMYK").save(tmp_path / "c.jpg", quality=100)
    cmyk = read_image(tmp_path / "c.jpg")
    assert cmyk.shape == (6, 5, 3)
    # Palette with a transparent index: that colour turns black.
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 1)
    img.info["transparency"] = 0
    img.save(tmp_path / "t.png", transparency=0)
    np.testing.assert_array_equal(read_image(tmp_path / "t.png")[0], [[0, 0, 0], [0, 255, 0]])


def test_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.png"
    with pytest.raises(ImageError, match="not found") as info:
        read_image(missing)
    assert str(info.value).startswith(str(missing))
    assert isinstance(info.value, ValueError)

    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not an image at all")
    with pytest.raises(ImageError, match="not a recognised image") as info:
        read_image(junk)
    assert str(info.value).startswith(str(junk))

    with pytest.raises(ImageError, match="not a file"):
        read_image(tmp_path)


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_truncated_file_raises(tmp_path: Path, ext: str) -> None:
    full = tmp_path / f"full{ext}"
    noise = np.random.default_rng(3).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(full)
    cut = tmp_path / f"cut{ext}"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated") as info:
        read_image(cut)
    assert str(info.value).startswith(str(cut))


def test_tensor_roundtrip() -> None:
    arr = _rgb()
    t = to_tensor(arr)
    assert t.dtype == torch.float32 and t.shape == (3, 6, 5)
    assert float(t.min()) >= 0 and float(t.max()) <= 1
    np.testing.assert_array_equal(to_uint8(t), arr)
    np.testing.assert_array_equal(to_uint8(t[None]), arr)
    # Rounds (not truncates) and clamps out-of-range values.
    x = torch.tensor([[[-0.2, 0.4 / 255, 1.6 / 255, 1.3]]])
    np.testing.assert_array_equal(to_uint8(x)[0, :, 0], [0, 0, 2, 255])
    with pytest.raises(ValueError):
        to_uint8(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError):
        to_tensor(arr.astype(np.float32))
