"""Feature taps: intermediate feature maps of a teacher or student, collected in one forward pass.

A tap is a name (``"stage1"``, ``"body"``) bound to a dotted module path (``"body.3"``, as in
``model.named_modules()``); its feature is that module's output. Taps are forward hooks added for
one forward and removed right after, so model code never changes to expose its features, and the
same model can run as teacher (width 1) then student (width w) with separate captures:

>>> t_out, t_feats = run_with_taps(model, lr, default_taps(model))  # doctest: +SKIP
>>> s_out, s_feats = run_with_taps(model, lr, default_taps(model), width=0.25)  # doctest: +SKIP

Captured tensors are not detached, so a loss on them trains everything upstream of the tap.
``materialize`` keeps module names, so a narrow student has the same paths as its full model;
teacher and student of different depths pair by tap *name* (``pair_taps``).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

__all__ = ["STAGES", "FeatureTaps", "default_taps", "pair_taps", "run_with_taps"]

STAGES = ("stage1", "stage2", "stage3")


def _stage_indices(n: int) -> dict[str, int]:
    """Three of ``n`` sequential units spread over depth: ``n//3 - 1``, ``2n//3 - 1``, ``n - 1``.

    For ``n < 3`` indices are clamped to 0 and, where two stages land on the same unit, only the
    deeper name is kept: ``n=1 -> {stage3: 0}``, ``n=2 -> {stage2: 0, stage3: 1}``. So ``"stage3"``
    is always the last unit, and a shallow student pairs with a teacher on the names it has.
    """
    if n < 1:
        raise ValueError(f"need at least one body unit to tap, got {n}")
    raw = {"stage1": n // 3 - 1, "stage2": 2 * n // 3 - 1, "stage3": n - 1}
    by_index = {max(0, i): name for name, i in raw.items()}  # later (deeper) names win
    return {name: i for i, name in sorted(by_index.items())}


def default_taps(model: nn.Module) -> dict[str, str]:
    """Tap name -> module path for a registered architecture (read from ``model.arch``).

    ``"stage1..3"`` are body-stage outputs spread over depth (FAKD's three taps, see
    ``_stage_indices`` for shallow bodies); ``"body"`` is the body's last feature map:
    - EDSR: residual blocks ``body.{i}``; ``"body"`` = ``body_end`` (before the long skip add).
    - RCAN: residual groups ``body.{g}``; ``"body"`` = ``body_end``.
    - plain, ecbsr: the ReLUs of the body (``body`` alternates conv or re-parameterisable block and
      ReLU, so ReLU ``j`` is ``body.{2j+1}``); ``"body"`` = the last ReLU.
    - quicksrnet: the same on its clipped ReLUs (``n_intermediate + 1`` of them).
    - xlsr: the GBlocks ``gblocks.{i}``; ``"body"`` = ``fuse`` (1x1 of main + skip, ReLU).
    Works on materialized students, which keep the full model's ``arch`` and module names.
    Feature shapes are ``(N, f, H, W)`` at LR size, ``f`` the active width.
    """
    arch = getattr(model, "arch", None)
    if not isinstance(arch, Mapping) or "name" not in arch:
        raise ValueError(
            f"{type(model).__name__} has no `arch` naming its architecture; pass taps explicitly"
        )
    name, args = arch["name"], arch.get("args", {})
    if name in ("edsr", "rcan"):
        n = args["n_resblocks"] if name == "edsr" else args["n_resgroups"]
        taps = {stage: f"body.{i}" for stage, i in _stage_indices(n).items()}
        return taps | {"body": "body_end"}
    if name in ("plain", "ecbsr", "quicksrnet"):
        # first conv (block) + the body convs, each with its activation: (n_convs - 2) or n_intermediate
        n_relus = args["n_convs"] - 1 if name in ("plain", "ecbsr") else args["n_intermediate"] + 1
        taps = {stage: f"body.{2 * j + 1}" for stage, j in _stage_indices(n_relus).items()}
        return taps | {"body": f"body.{2 * n_relus - 1}"}
    if name == "xlsr":
        taps = {stage: f"gblocks.{i}" for stage, i in _stage_indices(args["n_gblocks"]).items()}
        return taps | {"body": "fuse"}
    known = "ecbsr, edsr, plain, quicksrnet, rcan, xlsr"
    raise ValueError(f"no default taps for architecture {name!r}; known: {known}")


def pair_taps(
    teacher_taps: Mapping[str, str], student_taps: Mapping[str, str], names: Sequence[str] | None = None
) -> list[tuple[str, str, str]]:
    """``[(name, teacher_path, student_path), ...]`` for ``names`` (default: names both have, in
    the teacher's order). A name missing on either side raises ValueError listing all of them.
    """
    if names is None:
        names = [n for n in teacher_taps if n in student_taps]
        if not names:
            raise ValueError(
                f"teacher taps {sorted(teacher_taps)} and student taps {sorted(student_taps)} share no name"
            )
    missing = [f"{n!r} (teacher)" for n in names if n not in teacher_taps]
    missing += [f"{n!r} (student)" for n in names if n not in student_taps]
    if missing:
        raise ValueError(f"taps missing: {', '.join(missing)}")
    return [(n, teacher_taps[n], student_taps[n]) for n in names]


class FeatureTaps:
    """Hooks that record the outputs of the modules at ``taps`` (name -> dotted path) while active.

    Used as a context manager: hooks are added on entry and removed on exit (also on an exception).
    ``features`` (name -> tensor, not detached) is a *new* dict at the start of every forward of
    ``model``, so a dict taken after one forward is not overwritten by the next one:

    >>> with FeatureTaps(model, {"stage1": "body.1"}) as taps:  # doctest: +SKIP
    ...     model(x)
    ...     teacher_feats = taps.features
    ...     model(x, width=0.5)
    ...     student_feats = taps.features

    Unknown paths raise ValueError at construction, naming the path and close matches. A tapped
    module that runs twice in one forward, or returns something other than a tensor, raises.
    ``run_with_taps`` is the one-call form.
    """

    def __init__(self, model: nn.Module, taps: Mapping[str, str]) -> None:
        modules = dict(model.named_modules())
        for path in taps.values():
            if path not in modules:
                close = difflib.get_close_matches(path, list(modules), n=5)
                hint = f"; close matches: {', '.join(close)}" if close else ""
                raise ValueError(f"no module at tap path {path!r} in {type(model).__name__}{hint}")
        self.model = model
        self.taps = dict(taps)
        self._modules = {name: modules[path] for name, path in self.taps.items()}
        self._handles: list[RemovableHandle] = []
        self.features: dict[str, Tensor] = {}

    def _start_forward(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self.features = {}

    def _recorder(self, name: str) -> Callable[[nn.Module, tuple[Any, ...], Any], None]:
        def record(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            if not isinstance(out, Tensor):
                raise TypeError(
                    f"tap {name!r} ({self.taps[name]}) returned {type(out).__name__}, not a Tensor"
                )
            if name in self.features:
                raise RuntimeError(f"tap {name!r} ({self.taps[name]}) ran twice in one forward")
            self.features[name] = out

        return record

    def __enter__(self) -> FeatureTaps:
        if self._handles:
            raise RuntimeError("FeatureTaps is already active")
        self.features = {}
        try:
            # prepend: reset before any hook a tap on the root itself would add
            self._handles.append(self.model.register_forward_pre_hook(self._start_forward, prepend=True))
            for name, module in self._modules.items():
                self._handles.append(module.register_forward_hook(self._recorder(name)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook this object added (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def missing(self) -> list[str]:
        """Tap names with no feature from the last forward (their module did not run)."""
        return [name for name in self.taps if name not in self.features]


def run_with_taps(
    model: nn.Module, x: Tensor, taps: Mapping[str, str], **forward_kwargs: Any
) -> tuple[Tensor, dict[str, Tensor]]:
    """``(model(x, **forward_kwargs), {name: feature})`` with hooks only for this one forward.

    Features keep their graph (not detached). A tap whose module did not run raises RuntimeError.
    """
    with FeatureTaps(model, taps) as capture:
        out = model(x, **forward_kwargs)
        features = capture.features
        if missing := capture.missing():
            raise RuntimeError(f"taps {missing} did not run in the forward of {type(model).__name__}")
    return out, features
