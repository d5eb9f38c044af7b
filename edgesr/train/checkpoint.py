"""Self-describing checkpoints.

A checkpoint is a directory `checkpoints/step-000500/` holding
- `model.safetensors`: the weights, with metadata (format, architecture and its arguments, scale,
  trained widths, materialized width, recipe hash, step) so the model can be rebuilt from the file
  alone;
- `state.pt`: optimizer, scheduler, RNG and step, loaded with `weights_only=True`.

The directory is staged and moved into place by `edgesr.files.atomic_path`, and `checkpoints/latest`
(a one-line text file) is then replaced atomically, so a kill at any moment leaves either the old
or the new checkpoint, never a mix.
"""

from __future__ import annotations

import json
import random
import shutil
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from edgesr.errors import CheckpointError
from edgesr.files import atomic_path, atomic_write_text, is_no_space, mount_point, no_space_message
from edgesr.models import build_model, materialize
from edgesr.models.official import load_official, torch_load_safely
from edgesr.models.zoo import is_zoo_ref, load_zoo

FORMAT = "edgesr-checkpoint/1"
WEIGHTS = "model.safetensors"
STATE = "state.pt"


__all__ = [
    "CheckpointError", "CheckpointMeta", "convert_official", "load_model", "load_training_state",
    "load_weights", "open_checkpoint", "read_meta", "register_qat_rebuild", "resolve_checkpoint", "rng_state",
    "save_checkpoint", "set_rng_state",
]  # fmt: skip

# A QAT checkpoint's weights are the state of a fake-quant graph that only `edgesr.quant` can rebuild.
# The checkpoint format sits below quantization in the layers (docs/architecture.md), so quant
# registers the rebuild here when it is imported instead of this module importing quant.
QATRebuild = Callable[[nn.Module, dict[str, Any]], nn.Module]
_qat_rebuild: QATRebuild | None = None


def register_qat_rebuild(rebuild: QATRebuild) -> None:
    """Set how a QAT checkpoint's float student becomes its fake-quant graph (`edgesr.quant` calls this)."""
    global _qat_rebuild
    _qat_rebuild = rebuild


@dataclass(frozen=True)
class CheckpointMeta:
    arch: dict[str, Any]  # {"name": registered model name, "args": constructor kwargs}
    scale: int
    widths: tuple[float, ...]  # widths the checkpoint was trained at (1.0 = teacher)
    materialized_width: float | None  # set when the weights are a stand-alone narrow model
    recipe_hash: str
    step: int
    # QAT checkpoints only: {"backend", "fully_integer", "example"}; the weights are then the state of
    # the fake-quant graph (edgesr.quant.state). None for float checkpoints.
    quant: dict[str, Any] | None = None
    # where the weights came from when not from a recipe: `zoo:NAME` for a converted zoo teacher
    # (`edgesr eval` then prints the paper's numbers beside the measured ones). None otherwise.
    source: str | None = None

    def to_strings(self) -> dict[str, str]:
        optional = {} if self.quant is None else {"quant": json.dumps(self.quant, sort_keys=True)}
        if self.source is not None:
            optional["source"] = self.source
        return {
            "format": FORMAT,
            "arch": json.dumps(self.arch, sort_keys=True),
            "scale": str(self.scale),
            "widths": json.dumps(list(self.widths)),
            "materialized_width": json.dumps(self.materialized_width),
            "recipe_hash": self.recipe_hash,
            "step": str(self.step),
            **optional,
        }

    @classmethod
    def from_strings(cls, meta: dict[str, str], path: Path) -> CheckpointMeta:
        if meta.get("format") != FORMAT:
            raise CheckpointError(
                f"{path}: not an edgesr checkpoint (metadata format={meta.get('format')!r}, "
                f"expected {FORMAT!r}); to start from official EDSR/RCAN weights use `train.init`"
            )
        return cls(
            arch=json.loads(meta["arch"]),
            scale=int(meta["scale"]),
            widths=tuple(json.loads(meta["widths"])),
            materialized_width=json.loads(meta["materialized_width"]),
            recipe_hash=meta["recipe_hash"],
            step=int(meta["step"]),
            quant=json.loads(meta["quant"]) if "quant" in meta else None,
            source=meta.get("source"),
        )


def save_checkpoint(
    ckpt_root: Path,
    model: nn.Module,
    meta: CheckpointMeta,
    training_state: dict[str, Any] | None,
    keep: int = 2,
) -> Path:
    """Write `ckpt_root/step-XXXXXX/` atomically, point `latest` at it, prune old ones."""
    ckpt_root.mkdir(parents=True, exist_ok=True)
    name = f"step-{meta.step:07d}"
    for leftover in ckpt_root.glob(".step-*.tmp"):  # staging folders of a run killed mid-save
        shutil.rmtree(leftover, ignore_errors=True)
    # A copy of each: safetensors refuses tensors that share memory, and a QAT graph whose fake quant
    # is shared between ops (fully-integer depth-to-space, clamp) lists one module under several names.
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    try:
        with atomic_path(ckpt_root / name) as tmp:  # a failed write leaves no staging folder behind
            tmp.mkdir()
            save_file(tensors, tmp / WEIGHTS, metadata=meta.to_strings())
            if training_state is not None:
                torch.save(training_state, tmp / STATE)
    except Exception as e:  # a full disk: OSError, torch.save's RuntimeError, safetensors' own error
        raise _not_written(ckpt_root, name, tensors, training_state, e) from e
    try:
        atomic_write_text(ckpt_root / "latest", name + "\n")
    except OSError as e:
        raise CheckpointError(
            f"{ckpt_root / name} was written but {ckpt_root / 'latest'} could not be pointed at it "
            f"({e.strerror}); the run resumes from the previous checkpoint until it is"
        ) from e
    old = sorted(p for p in ckpt_root.glob("step-*") if p.is_dir() and p.name != name)
    for p in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return ckpt_root / name


# How each writer reports a full disk: OSError ENOSPC, torch.save "[enforce fail at
# inline_container.cc] ... unexpected pos", safetensors "No space left on device (os error 28)".
_FULL_DISK_TEXT = ("No space left", "os error 28", "unexpected pos")


def _not_written(ckpt_root: Path, name: str, tensors: dict, training_state: Any, e: Exception) -> Exception:
    """The error for a checkpoint that could not be written: a full disk named with the space a
    checkpoint needs; anything else that is not an OSError is re-raised as the bug it is."""
    # weights + Adam's two moments: the size a checkpoint of this model takes, within a few %
    need = sum(t.numel() * t.element_size() for t in tensors.values()) * (3 if training_state else 1)
    full = is_no_space(e) or any(text in str(e) for text in _FULL_DISK_TEXT)
    if not full and not isinstance(e, OSError):
        return e
    last = (ckpt_root / "latest").read_text().strip() if (ckpt_root / "latest").is_file() else None
    kept = f"the last good checkpoint, {ckpt_root / last}, is kept" if last else "no earlier checkpoint"
    if full:
        why = no_space_message(ckpt_root, need) or f"no space left on {mount_point(ckpt_root)}"
        run = ckpt_root.parent if ckpt_root.name == "checkpoints" else "RUN_DIR"
        todo = f"free space, then continue with `edgesr train --resume {run}`"
    else:
        why, todo = str(e), "fix the cause above and resume"
    return CheckpointError(f"{ckpt_root / name}: not written: {why}; {kept}; {todo}")


def convert_official(src: str | Path, dst: str | Path, **kwargs: Any) -> Path:
    """Write the official checkpoint ``src`` (a file, or ``zoo:NAME``: fetched into the cache if
    needed) as an edgesr checkpoint under the directory ``dst``.

    ``kwargs`` go to ``load_official`` (``load_zoo``'s ``progress`` for a zoo name). The result is a
    teacher checkpoint (step 0, widths ``(1.0,)``, recipe hash ``"official"``; ``source`` the zoo
    name) that ``load_model(dst)`` reads. Returns the written ``dst/step-0000000`` directory.
    """
    if is_zoo_ref(src):
        model, _ = load_zoo(src, **kwargs)
    else:
        model, _ = load_official(src, **kwargs)
    meta = CheckpointMeta(
        arch=model.arch, scale=model.scale, widths=(1.0,), materialized_width=None,
        recipe_hash="official", step=0, source=src if is_zoo_ref(src) else None,
    )  # fmt: skip
    return save_checkpoint(Path(dst), model, meta, None)


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a `.safetensors` file, a checkpoint directory or a run directory."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if path.is_file():
        if path.suffix != ".safetensors":
            raise CheckpointError(
                f"{path}: expected an edgesr checkpoint (.safetensors, a checkpoint dir or a run dir); "
                "official EDSR/RCAN .pt/.pth state dicts are read by train.init (or convert one with "
                "edgesr.train.checkpoint.convert_official)"
            )
        return path
    if (path / WEIGHTS).is_file():
        return path / WEIGHTS
    latest = path / "checkpoints" / "latest"
    if not latest.is_file() and (path / "latest").is_file():
        latest = path / "latest"
    if latest.is_file():
        target = latest.parent / latest.read_text().strip() / WEIGHTS
        if target.is_file():
            return target
        raise CheckpointError(f"{latest}: points at {target}, which does not exist")
    raise CheckpointError(f"{path}: no {WEIGHTS} and no checkpoints/latest inside")


def read_meta(path: str | Path) -> CheckpointMeta:
    """The metadata only (the safetensors header; no weights are read)."""
    path = resolve_checkpoint(path)
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{path}: cannot read safetensors header ({e})") from e
    return CheckpointMeta.from_strings(meta, path)


def open_checkpoint(path: str | Path, map_location: str = "cpu") -> tuple[nn.Module, CheckpointMeta, Path]:
    """Rebuild the model a checkpoint describes and load its weights (strict), reading the file once.

    Returns (model, meta, the resolved .safetensors path). A QAT checkpoint comes back as its
    fake-quant graph (train mode; needs `edgesr.quant` imported, and torchao).
    """
    path = resolve_checkpoint(path)
    try:
        with safe_open(path, framework="pt", device=map_location) as f:
            strings = f.metadata() or {}
            meta = CheckpointMeta.from_strings(strings, path)
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except CheckpointError:
        raise
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"{path}: cannot read safetensors file ({e})") from e
    model = build_model(meta.arch["name"], **meta.arch["args"])
    if meta.materialized_width is not None:
        model = materialize(model, meta.materialized_width)
    if meta.quant is not None:
        if _qat_rebuild is None:
            raise CheckpointError(
                f"{path} is a QAT checkpoint: rebuilding its fake-quant graph needs edgesr.quant "
                "(`import edgesr.quant` first; it needs torchao: pip install \"edgesr[quant]\")"
            )
        model = _qat_rebuild(model, meta.quant)
    try:
        load_weights(model, state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not match {meta.arch}: {e}") from e
    return model, meta, path


def load_model(path: str | Path, map_location: str = "cpu") -> tuple[nn.Module, CheckpointMeta]:
    """`open_checkpoint` without the path: (model, meta)."""
    model, meta, _ = open_checkpoint(path, map_location)
    return model, meta


def load_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """`model.load_state_dict(state, strict=True)` for a state read back from safetensors.

    safetensors keeps tensors only, not the per-module versions a `state_dict()` carries; without
    them torchao's observers take the state for version 1 and reset their `eps` buffers (QAT resume
    would then differ). The versions come from `model`, which has the same modules.
    """
    versioned = OrderedDict(state)
    versioned._metadata = getattr(model.state_dict(), "_metadata", None)  # type: ignore[attr-defined]
    model.load_state_dict(versioned, strict=True)


def load_training_state(ckpt_weights: Path) -> dict[str, Any]:
    state_path = ckpt_weights.parent / STATE
    if not state_path.is_file():
        raise CheckpointError(f"{state_path}: missing; cannot resume from a weights-only checkpoint")
    return torch_load_safely(state_path, "a training state (optimizer, scheduler, RNG)")


def rng_state() -> dict[str, Any]:
    """Every RNG a training step may touch (data order itself is derived from seed and index)."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state_to_tensor(np.random.get_state()),
        "python": _python_state_to_tensor(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(_tensor_to_numpy_state(state["numpy"]))
    random.setstate(_tensor_to_python_state(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# weights_only=True loading accepts tensors and plain containers, not numpy arrays or tuples of
# mixed objects, so RNG states are stored as int64 tensors.
def _numpy_state_to_tensor(st: tuple) -> dict[str, Any]:
    return {"keys": torch.from_numpy(st[1].astype(np.int64)), "pos": st[2], "gauss": [st[3], st[4]]}


def _tensor_to_numpy_state(d: dict[str, Any]) -> tuple:
    return (
        "MT19937",
        d["keys"].numpy().astype(np.uint32),
        int(d["pos"]),
        int(d["gauss"][0]),
        float(d["gauss"][1]),
    )


def _python_state_to_tensor(st: tuple) -> dict[str, Any]:
    return {"version": st[0], "internal": torch.tensor(st[1], dtype=torch.int64), "gauss": st[2]}


def _tensor_to_python_state(d: dict[str, Any]) -> tuple:
    return (d["version"], tuple(int(v) for v in d["internal"].tolist()), d["gauss"])
