"""The exporter protocol and its registry.

Every target is one small object that satisfies `Exporter` and registers itself in `EXPORTERS`
under its `TargetSpec`'s name (edgesr/targets.py holds the facts about each target; the exporter
holds how to convert, run and describe its artifacts). Its SDK is imported only inside its methods,
so `import edgesr.export` never needs an export SDK (the training machines have none of them).
The orchestration (student -> verified artifact + manifest) is edgesr/export/run.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from torch import Tensor, nn

from edgesr.errors import ExportError, OutputExistsError, UnknownNameError
from edgesr.export.plan import ExportPlan
from edgesr.files import atomic_path
from edgesr.registry import Registry, unknown_name_message
from edgesr.targets import TargetSpec

__all__ = [
    "EXPORTERS",
    "Exporter",
    "ImageOnly",
    "UnsupportedOpError",
    "VerificationError",
    "float_io",
    "get_exporter",
    "staged",
]


class UnsupportedOpError(ExportError):
    """The model uses an op the target's converter cannot lower."""

    def __init__(self, target: str, op: str, detail: str) -> None:
        self.target, self.op = target, op
        super().__init__(
            f"target {target!r} cannot convert op {op!r}: {detail}. "
            "Replace the op in the model or export to another target."
        )


class VerificationError(ExportError):
    """The artifact's runtime output disagrees with PyTorch beyond the bar; nothing was written."""


class ImageOnly(nn.Module):
    """`forward(x)` only, so an export traces the image input and nothing else: our models' defaulted
    `width=1.0` argument would otherwise be traced as a tensor (TorchScript) or an extra input."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:  # (1, 3, H, W) -> (1, 3, sH, sW)
        return self.model(x)


@runtime_checkable
class Exporter(Protocol):
    """One export target. Stateless; every SDK import happens inside the methods."""

    spec: TargetSpec  # the target's facts: name, suffix, precisions, upsamplers, delegates, ...

    def sdk_versions(self) -> dict[str, str]:
        """Import the SDK (MissingSDKError when absent); return {package: version}."""
        ...

    def export(self, model: nn.Module, example: Tensor, path: Path, plan: ExportPlan) -> None:
        """Convert `model` (eval mode, traced with `example`, 1x3xHxW in [0,1]) and write `path`."""
        ...

    def load(
        self, path: Path, threads: int | None = None, options: Mapping[str, str] | None = None
    ) -> Callable[[np.ndarray], np.ndarray]:
        """A callable running the artifact on its real runtime: float32 NCHW in -> float32 NCHW out.
        `options`: runtime settings (`spec.runtime_options`; ValueError for one the target lacks)."""
        ...

    def runs_here(self, path: Path | None = None) -> str | None:
        """None, or why the artifact cannot run on this machine (verification is then structural)."""
        ...

    def validate(self, path: Path, plan: ExportPlan) -> dict[str, Any]:
        """Structural checks: {"checks": {name: ok}, "passed": bool} (used when it cannot run here)."""
        ...

    def evaluator(self) -> tuple[str, Callable[[Path, np.ndarray], np.ndarray]] | None:
        """(name, run) of edgesr's own program evaluator for when the runtime cannot run here, or None."""
        ...

    def io_spec(self, path: Path) -> dict[str, Any]:
        """{"input": {...}, "output": {...}}: what differs from float32 NCHW in [0, 1] ({} if nothing)."""
        ...

    def delegation(self, path: Path) -> dict[str, Any]:
        """Op histogram of the artifact and which runtime backend runs which ops."""
        ...


def float_io(path: Path) -> dict[str, Any]:
    """`io_spec` of a target whose artifacts always take and give float32 NCHW in [0, 1]."""
    return {}


EXPORTERS: Registry[Exporter] = Registry("exporter")


def get_exporter(target: str) -> Exporter:
    if target not in EXPORTERS:
        raise UnknownNameError(unknown_name_message("target", target, EXPORTERS.names()))
    return EXPORTERS.get(target)


@contextmanager
def staged(final: Path, force: bool) -> Iterator[Path]:
    """`edgesr.files.atomic_path` for an artifact (file or folder, e.g. an .mlpackage): the staged
    path is moved over `final` only when the body succeeds; an existing `final` needs `force`."""
    if final.exists() and not force:
        raise OutputExistsError(f"{final} exists; pass --force (force=True) to replace it")
    with atomic_path(final) as tmp:
        yield tmp
