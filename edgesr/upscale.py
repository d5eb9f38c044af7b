"""Upscale images of any size with bounded memory by running the network on overlapping tiles.

Each LR tile is padded with `overlap` pixels of real context on every side that has a neighbour;
only the tile's interior is kept. When the network's receptive field radius (in LR pixels) is at
most `overlap`, the stitched result equals a whole-image forward exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch


def tiles(size: int, tile: int) -> Iterator[tuple[int, int]]:
    """(start, stop) of consecutive tiles covering [0, size)."""
    for start in range(0, size, tile):
        yield start, min(start + tile, size)


@torch.no_grad()
def upscale_tiled(
    fn: Callable[[torch.Tensor], torch.Tensor],
    lr: torch.Tensor,
    scale: int,
    tile: int = 256,
    overlap: int = 16,
    on_tile: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Apply `fn` (1x3xhxw -> 1x3x(sh)x(sw)) to `lr` (1x3xHxW) tile by tile.

    Memory is bounded by one (tile + 2*overlap)^2 forward, whatever the image size.
    """
    if tile <= 0 or overlap < 0:
        raise ValueError(f"tile must be > 0 and overlap >= 0, got tile={tile}, overlap={overlap}")
    _, c, h, w = lr.shape
    out = torch.empty(1, c, h * scale, w * scale, dtype=lr.dtype)
    for y0, y1 in tiles(h, tile):
        for x0, x1 in tiles(w, tile):
            py0, px0 = max(y0 - overlap, 0), max(x0 - overlap, 0)
            py1, px1 = min(y1 + overlap, h), min(x1 + overlap, w)
            sr = fn(lr[:, :, py0:py1, px0:px1]).to(out.dtype)
            oy, ox = (y0 - py0) * scale, (x0 - px0) * scale
            out[:, :, y0 * scale : y1 * scale, x0 * scale : x1 * scale] = sr[
                :, :, oy : oy + (y1 - y0) * scale, ox : ox + (x1 - x0) * scale
            ]
            if on_tile is not None:
                on_tile()
    return out


def tile_count(h: int, w: int, tile: int) -> int:
    return len(list(tiles(h, tile))) * len(list(tiles(w, tile)))


def upscale_image(
    fn: Callable[[torch.Tensor], torch.Tensor],
    image: np.ndarray,
    scale: int,
    tile: int = 256,
    overlap: int = 16,
    progress: bool = True,
) -> np.ndarray:
    """uint8 HxWx3 RGB -> uint8 (sH)x(sW)x3, with a progress bar over tiles."""
    from rich.progress import Progress

    from edgesr.data.images import to_tensor, to_uint8

    lr = to_tensor(image).unsqueeze(0)
    total = tile_count(lr.shape[2], lr.shape[3], tile)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("upscaling", total=total)
        sr = upscale_tiled(fn, lr, scale, tile, overlap, on_tile=lambda: bar.advance(task))
    return to_uint8(sr[0].clamp(0, 1))
