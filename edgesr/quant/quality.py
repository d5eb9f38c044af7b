"""What int8 costs, image by image: the quality report behind `edgesr eval --quant` and the int8 gate
of `edgesr export`.

A mean over textured photos hides where quantization fails: on smooth images (skies, calm water,
fog, a plain background) the float student is very close to the HR, so the int8 grid's error, which
texture masks, is all that is left (docs/quantization.md). So every figure here is per image, and a
report gives the mean AND the worst image:

    q = measure_int8_loss(student.net, int8_graph, images, scale=2)
    q.mean_drop_db, q.worst.name, q.worst.drop_db       # dB of Y-PSNR lost to int8
    q.check(MAX_MEAN_DROP_DB, MAX_WORST_DROP_DB)        # None, or why the artifact is refused

Drops are float Y-PSNR minus int8 Y-PSNR against the HR (protocol: border crop = scale, outputs
clamped to [0, 1] as saved); `vs_float_db` is the PSNR between the two outputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from edgesr.evaluate import bicubic_upscale
from edgesr.metrics import psnr_y

__all__ = [
    "GATE_IMAGES",
    "MAX_MEAN_DROP_DB",
    "MAX_WORST_DROP_DB",
    "ImageLoss",
    "Int8Loss",
    "measure_int8_loss",
    "per_image_markdown",
]

# The int8 gate's limits (the proposal, kept: a mean loss a viewer does not see, and no image
# that visibly bands). `edgesr export --accept-int8-loss` keeps an artifact that passes them.
MAX_MEAN_DROP_DB = 0.2
MAX_WORST_DROP_DB = 1.0
# What the gate measures on: the textured built-in val photos and the smooth ones (edgesr.data).
GATE_IMAGES: tuple[str, ...] = ("builtin:val", "builtin:smooth")


@dataclass(frozen=True)
class ImageLoss:
    name: str
    bicubic_db: float
    float_db: float
    int8_db: float
    vs_float_db: float  # PSNR(int8 output, float output), Y channel, same crop

    @property
    def drop_db(self) -> float:
        return self.float_db - self.int8_db


@dataclass(frozen=True)
class Int8Loss:
    images: tuple[ImageLoss, ...]

    @property
    def mean_drop_db(self) -> float:
        return sum(i.drop_db for i in self.images) / len(self.images)

    @property
    def worst(self) -> ImageLoss:
        return max(self.images, key=lambda i: i.drop_db)

    @property
    def below_bicubic(self) -> list[str]:
        """Images where float beats bicubic but int8 does not."""
        return [i.name for i in self.images if i.float_db > i.bicubic_db >= i.int8_db]

    def check(self, max_mean_db: float, max_worst_db: float) -> str | None:
        """None when the loss is within both limits, else what is exceeded (one line)."""
        w = self.worst
        if self.mean_drop_db <= max_mean_db and w.drop_db <= max_worst_db:
            return None
        return (
            f"int8 loses {w.drop_db:.2f} dB Y-PSNR on {w.name!r} ({w.float_db:.2f} -> {w.int8_db:.2f} dB) "
            f"and {self.mean_drop_db:.2f} dB on average over {len(self.images)} images (limits: "
            f"{max_worst_db:g} dB on any image, {max_mean_db:g} dB mean)"
        )

    def to_json(self) -> dict[str, Any]:
        w = self.worst
        return {
            "mean_drop_db": _db(self.mean_drop_db),
            "worst_image": w.name,
            "worst_drop_db": _db(w.drop_db),
            "below_bicubic": self.below_bicubic,
            "images": [{k: _db(v) if isinstance(v, float) else v for k, v in asdict(i).items()}
                       for i in self.images],  # fmt: skip
        }


@torch.no_grad()
def measure_int8_loss(
    float_model: nn.Module, int8_model: nn.Module, images: Sequence[dict[str, Any]], scale: int
) -> Int8Loss:
    """Per-image Y-PSNR of `float_model` and `int8_model` (stand-alone networks, `net(x)`) against the
    HR of `images` (items of edgesr.data.EvalImages: {"name", "lr", "hr"})."""
    out = []
    for item in images:
        sr_float, sr_int8 = _sr(float_model, item["lr"]), _sr(int8_model, item["lr"])
        out.append(
            ImageLoss(
                name=str(item["name"]),
                bicubic_db=psnr_y(bicubic_upscale(item["lr"], scale), item["hr"], crop=scale),
                float_db=psnr_y(sr_float, item["hr"], crop=scale),
                int8_db=psnr_y(sr_int8, item["hr"], crop=scale),
                vs_float_db=psnr_y(sr_int8, sr_float, crop=scale),
            )
        )
    if not out:
        raise ValueError("measure_int8_loss: no images")
    return Int8Loss(tuple(out))


def per_image_markdown(losses: dict[str, Int8Loss]) -> str:
    """One row per image (Y-PSNR of bicubic, float and each int8 variant, with its drop), then the
    mean and worst drop of each variant. All variants must have been measured on the same images."""
    labels = list(losses)
    first = losses[labels[0]].images
    head = "| image | bicubic | float | " + " | ".join(f"{k} (drop)" for k in labels) + " |"
    lines = [head, "|---|---:|---:|" + "---:|" * len(labels)]
    for i, img in enumerate(first):
        variants = [losses[k].images[i] for k in labels]
        cells = " | ".join(f"{v.int8_db:.2f} ({v.drop_db:+.2f})" for v in variants)
        lines.append(f"| {img.name} | {img.bicubic_db:.2f} | {img.float_db:.2f} | {cells} |")
    means = " | ".join(f"{losses[k].mean_drop_db:.3f}" for k in labels)
    lines.append(f"| **mean drop** | | | {means} |")
    worst = [f"{losses[k].worst.drop_db:.3f} ({losses[k].worst.name})" for k in labels]
    lines.append("| **worst drop** | | | " + " | ".join(worst) + " |")
    return "\n".join(lines)


def _db(v: float) -> float | str:
    """dB for JSON: 3 decimals; an identical pair of images is "inf" (JSON has no infinity)."""
    return round(v, 3) if math.isfinite(v) else ("inf" if v > 0 else "-inf")


def _sr(net: nn.Module, lr: torch.Tensor) -> torch.Tensor:
    """3 x h x w -> 3 x sh x sw, clamped to [0, 1] as an image is saved (any stand-alone net or graph)."""
    return net(lr.unsqueeze(0)).float().clamp(0, 1)[0]
