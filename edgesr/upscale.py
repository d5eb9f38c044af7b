"""Upscale images of any size with bounded memory by running the network on overlapping tiles.

One tiler serves checkpoints and exported artifacts. Each tile's core is run inside a window with
`overlap` pixels of real context on every side that has a neighbour; only the core is kept. When
the network's receptive field radius (in LR pixels) is at most `overlap`, the stitched result
equals a whole-image forward exactly.

- Any-size networks (checkpoints, dynamic artifacts): cores are `tile` pixels, windows are the
  core plus the context that exists.
- Fixed-shape artifacts (`input_hw`): every window is exactly the artifact's input; windows at the
  image edges are shifted inward, and an image smaller than the input is mirror-padded to it
  (exact away from the padded bottom/right edges, by the receptive field).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from edgesr.data.images import to_tensor, to_uint8
from edgesr.errors import NotRunnableHere, UsageError
from edgesr.evaluate import run_sr
from edgesr.export import get_exporter
from edgesr.export.manifest import checked_artifact, guarded
from edgesr.student import load_student


@dataclass(frozen=True)
class Span:
    """One tile along one axis, in LR pixels: keep [start, stop) of a forward over [lo, hi)."""

    start: int
    stop: int
    lo: int
    hi: int


def tiles(size: int, tile: int) -> Iterator[tuple[int, int]]:
    """(start, stop) of consecutive tiles covering [0, size)."""
    for start in range(0, size, tile):
        yield start, min(start + tile, size)


def spans(size: int, tile: int, overlap: int, window: int | None = None) -> list[Span]:
    """Tiles covering [0, size) along one axis, each with up to `overlap` pixels of context.

    `window=None`: cores of `tile` pixels, windows clipped to the image. `window=n`: every window is
    exactly `n` pixels (shifted inward at the edges; a single [0, size) window when size <= n, which
    the caller pads), cores of `n - 2*overlap` pixels.
    """
    if tile <= 0 or overlap < 0:
        raise UsageError(f"tile must be > 0 and overlap >= 0, got tile={tile}, overlap={overlap}")
    if window is None:
        return [Span(a, b, max(a - overlap, 0), min(b + overlap, size)) for a, b in tiles(size, tile)]
    if size <= window:
        return [Span(0, size, 0, size)]
    core = window - 2 * overlap
    if core < 1:
        raise UsageError(
            f"--overlap {overlap} leaves no room in a fixed {window}-pixel input (need 2*overlap < "
            f"{window}): pass a smaller --overlap"
        )
    out = []
    for a, b in tiles(size, core):
        lo = min(max(a - overlap, 0), size - window)
        out.append(Span(a, b, lo, lo + window))
    return out


def mirror_pad(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(N, C, h0, w0) -> (N, C, h, w) with h >= h0, w >= w0: extended past the bottom and right edges
    by mirroring (edge pixel repeated, numpy's 'symmetric'), by any amount."""

    def index(n: int, size: int) -> torch.Tensor:
        i = torch.arange(size) % (2 * n)
        return torch.where(i < n, i, 2 * n - 1 - i).to(x.device)

    return x.index_select(2, index(x.shape[2], h)).index_select(3, index(x.shape[3], w))


@torch.no_grad()
def upscale_tiled(
    fn: Callable[[torch.Tensor], torch.Tensor],
    lr: torch.Tensor,
    scale: int,
    tile: int = 256,
    overlap: int = 16,
    on_tile: Callable[[], None] | None = None,
    input_hw: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Apply `fn` (1x3xhxw -> 1x3x(sh)x(sw)) to `lr` (1x3xHxW) tile by tile.

    `input_hw`: the (H, W) every call of `fn` must get (a fixed-shape artifact); `tile` is then unused.
    Memory is bounded by one (tile + 2*overlap)^2 (or `input_hw`) forward, whatever the image size.
    """
    _, c, h, w = lr.shape
    fixed_h, fixed_w = input_hw if input_hw is not None else (None, None)
    out = torch.empty(1, c, h * scale, w * scale, dtype=lr.dtype)
    for ys in spans(h, tile, overlap, fixed_h):
        for xs in spans(w, tile, overlap, fixed_w):
            window = lr[:, :, ys.lo : ys.hi, xs.lo : xs.hi]
            if input_hw is not None and window.shape[2:] != input_hw:
                window = mirror_pad(window, *input_hw)
            sr = fn(window).to(out.dtype)
            want = (window.shape[2] * scale, window.shape[3] * scale)
            if tuple(sr.shape[2:]) != want:
                raise ValueError(
                    f"the network mapped {tuple(window.shape)} to {tuple(sr.shape)}, not x{scale}"
                )
            oy, ox = (ys.start - ys.lo) * scale, (xs.start - xs.lo) * scale
            out[:, :, ys.start * scale : ys.stop * scale, xs.start * scale : xs.stop * scale] = sr[
                :, :, oy : oy + (ys.stop - ys.start) * scale, ox : ox + (xs.stop - xs.start) * scale
            ]
            if on_tile is not None:
                on_tile()
    return out


def tile_count(h: int, w: int, tile: int, overlap: int = 0, input_hw: tuple[int, int] | None = None) -> int:
    """Number of forwards `upscale_tiled` makes for an HxW image."""
    fixed_h, fixed_w = input_hw if input_hw is not None else (None, None)
    return len(spans(h, tile, overlap, fixed_h)) * len(spans(w, tile, overlap, fixed_w))


def upscale_image(
    fn: Callable[[torch.Tensor], torch.Tensor],
    image: np.ndarray,
    scale: int,
    tile: int = 256,
    overlap: int = 16,
    progress: bool = True,
    input_hw: tuple[int, int] | None = None,
) -> np.ndarray:
    """uint8 HxWx3 RGB -> uint8 (sH)x(sW)x3, with a progress bar over tiles."""
    from rich.progress import Progress


    lr = to_tensor(image).unsqueeze(0)
    total = tile_count(lr.shape[2], lr.shape[3], tile, overlap, input_hw)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("upscaling", total=total)
        sr = upscale_tiled(fn, lr, scale, tile, overlap, on_tile=lambda: bar.advance(task), input_hw=input_hw)
    return to_uint8(sr[0].clamp(0, 1))


@dataclass(frozen=True)
class Upscaler:
    """A network ready to tile: `fn` maps float32 1x3xhxw in [0, 1] to 1x3x(scale*h)x(scale*w)."""

    fn: Callable[[torch.Tensor], torch.Tensor]
    scale: int
    input_hw: tuple[int, int] | None  # the fixed LR input (H, W) in pixels; None = any size
    label: str  # what runs, for messages


def checkpoint_upscaler(checkpoint: str | os.PathLike[str], width: float | None = None) -> Upscaler:
    """A checkpoint in eager PyTorch at `width` (default: a materialized student's own width, else
    the narrowest trained width; any width of a full network slices its leading channels)."""
    s = load_student(checkpoint, width, any_width=True)
    return Upscaler(lambda x: run_sr(s.net, x), s.scale, None, f"{s.arch['name']} width {s.width:g}")


def artifact_upscaler(
    path: str | os.PathLike[str], threads: int | None = None, trust: bool = False
) -> Upscaler:
    """An exported artifact on its runtime here, described by the manifest next to it.

    Refused (one line naming the file) when the artifact no longer matches its manifest's sha256
    (unless `trust`), when its runtime is not installed or cannot run here (Core ML off macOS), and
    when the runtime cannot load or run it (truncated, corrupt, or a manifest that was edited).
    """
    path, manifest = checked_artifact(path, trust)
    target = manifest["target"]
    exporter = get_exporter(target)
    reason = guarded(path, "reading it", exporter.runs_here)(path)
    if reason:
        raise NotRunnableHere(f"{path}: a {target} artifact cannot run on this machine: {reason}")
    options = (manifest.get("runtime") or {}).get("options") or {}  # as it was exported to be run
    run = guarded(path, f"loading it on {exporter.spec.runtime_label}", exporter.load)(path, threads, options)
    run = guarded(path, f"running it on {exporter.spec.runtime_label}", run)
    shape = manifest["input"]["shape"]
    input_hw = None if manifest["input"].get("dynamic") else (int(shape[2]), int(shape[3]))

    def fn(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(run(x.numpy()), dtype=np.float32))

    size = "dynamic" if input_hw is None else f"{input_hw[0]}x{input_hw[1]}"
    label = f"{target} {manifest['precision']} artifact, input {size}, on {exporter.spec.runtime_label}"
    return Upscaler(fn, int(manifest["model"]["scale"]), input_hw, label)
