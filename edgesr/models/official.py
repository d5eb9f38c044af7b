"""Import teacher weights from the official EDSR (sanghyun-son/EDSR-PyTorch) and RCAN (yulunzhang/RCAN)
PyTorch checkpoints into edgesr's channel-split ``EDSR`` / ``RCAN``.

The official layout this module assumes (``src/model/edsr.py``, ``common.py`` and
``RCAN_TrainCode/code/model/rcan.py``; written from their well-known structure, not from a file
read here):

- ``head.0`` conv 3 -> F; ``tail.0.{j}`` the upsampler convs (``Upsampler`` is a ``Sequential`` of
  [conv F -> 4F, PixelShuffle(2)] x log2(scale), or [conv F -> 9F, PixelShuffle(3)]: convs at even
  ``j``); ``tail.1`` conv F -> 3.
- EDSR: ``body.{i}.body.{0,2}`` the two convs of ResBlock ``i`` (``.1`` is the ReLU);
  ``body.{n_resblocks}`` the body-end conv.
- RCAN: ``body.{g}.body.{b}.body.{0,2}`` the RCAB convs, ``body.{g}.body.{b}.body.3.conv_du.{0,2}``
  the channel-attention squeeze / excite 1x1 convs, ``body.{g}.body.{n_resblocks}`` the group-end
  conv, ``body.{n_resgroups}`` the body-end conv.
- ``sub_mean`` / ``add_mean``: ``MeanShift`` 1x1 convs (identity weight, bias ``-/+ rgb_range *
  DIV2K mean``). edgesr's ``MeanShift`` is a constant buffer, so these are not loaded; when present
  they are checked against the DIV2K mean and tell the checkpoint's ``rgb_range`` (255 officially).
- Files are ``torch.save`` d state dicts, possibly wrapped as ``{"state_dict": ...}`` or
  ``{"model": ...}`` and with ``module.`` (DataParallel) or ``model.`` (wrapper) key prefixes.

Value range. Official weights expect inputs in [0, R] (R = 255); edgesr models take [0, 1]. A ReLU
conv net is positively homogeneous up to its biases: ``N_theta(R x) = R N_theta'(x)`` where theta'
divides every bias by R (the mean shift scales with the range, as edgesr's does via rgb_range). The
exception is RCAN's channel attention, ``x * sigmoid(excite(relu(squeeze(avgpool(x)))))``: its
squeeze sees features already scaled by 1/R, so its *weight* is multiplied by R (bias kept) and the
excite conv and sigmoid then see the official values unchanged; the product with ``x`` carries the
1/R scale on, as the main path needs.

``res_scale`` is not stored in the weights: EDSR uses 0.1 for the 256-feature full model and 1.0
otherwise (the official defaults); official RCAN ignores its ``res_scale`` (1.0).
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from edgesr.errors import CheckpointError
from edgesr.models import build_model
from edgesr.models.edsr import DIV2K_RGB_MEAN

__all__ = ["is_official_checkpoint", "load_official", "official_arch"]

_CONTAINERS = ("state_dict", "model")  # wrapper dicts seen around official state dicts
_PREFIXES = ("module.", "model.")  # DataParallel / wrapper-module key prefixes
_MEAN_SHIFT = ("sub_mean.weight", "sub_mean.bias", "add_mean.weight", "add_mean.bias")


def load_official(
    path: str | Path,
    arch: str | None = None,
    scale: int | None = None,
    res_scale: float | None = None,
    rgb_range: float | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Build an edgesr ``edsr`` / ``rcan`` model (``rgb_range=1.0``) holding official weights.

    Args:
        path: official ``.pt`` / ``.pth`` (or ``.safetensors``) checkpoint.
        arch: ``"edsr"`` or ``"rcan"``; inferred from the keys (``conv_du`` means RCAN) when None.
        scale: upscaling factor; inferred from the upsampler convs when None, checked when given.
        res_scale: residual scaling, which the weights cannot tell; None gives the official default
            (EDSR: 0.1 when n_feats == 256, else 1.0; RCAN: 1.0).
        rgb_range: value range R the checkpoint was trained for; None reads it from the mean-shift
            biases when present, else assumes the official 255.

    Returns:
        ``(model, info)``; the model maps [0, 1] images to [0, 1] and equals ``official(255 x) / 255``.
        ``info`` = ``{"arch", "args", "source", "rgb_range", "ignored_keys"}``.

    Raises:
        ValueError naming the file (and the key) for an unreadable file, an edgesr checkpoint,
        unknown / missing keys, shape mismatches, or an ``arch`` / ``scale`` that contradicts the weights.
    """
    path = Path(path)
    state = _read_state_dict(path)
    name, args = _infer_args(state, path, arch, scale, res_scale)
    R = _source_range(state, path, rgb_range)

    model = build_model(name, **args, rgb_range=1.0)
    target = model.state_dict()
    key_map = _key_map(name, args)
    assert set(key_map.values()) == set(target), "official key map out of date with the edgesr model"

    ignored = sorted(k for k in state if k in _MEAN_SHIFT)
    unknown = sorted(set(state) - set(key_map) - set(ignored))
    missing = sorted(set(key_map) - set(state))
    if unknown or missing:
        raise CheckpointError(
            f"{path}: does not match the official {name.upper()} layout inferred as {args}: "
            f"{len(unknown)} unexpected keys {unknown[:8]}, {len(missing)} missing keys {missing[:8]}"
        )
    converted: dict[str, Tensor] = {}
    for src_key, dst_key in key_map.items():
        value = state[src_key]
        if value.shape != target[dst_key].shape:
            raise CheckpointError(
                f"{path}: key {src_key!r} has shape {tuple(value.shape)}, expected "
                f"{tuple(target[dst_key].shape)} for {name.upper()} {args}"
            )
        converted[dst_key] = _rescale(dst_key, value.float(), R)
    model.load_state_dict(converted, strict=True)
    info = {"arch": name, "args": dict(model.arch["args"]), "source": str(path), "rgb_range": R,
            "ignored_keys": ignored}  # fmt: skip
    return model, info


def is_official_checkpoint(path: str | Path) -> bool:
    """True when ``path`` is a file holding an official-layout EDSR/RCAN state dict.

    edgesr's own checkpoints (directories, or ``.safetensors`` with edgesr ``format`` metadata) give
    False without reading their tensors; a ``.pt`` file is memory-mapped where its format allows.
    Unreadable files give False.
    """
    path = Path(path)
    if not path.is_file() or _edgesr_format(path) is not None:
        return False
    try:
        state = _read_state_dict(path)
    except ValueError:
        return False
    return "head.0.weight" in state and "tail.1.weight" in state


def official_arch(
    path: str | Path, arch: str | None = None, scale: int | None = None, res_scale: float | None = None
) -> tuple[str, dict[str, Any]]:
    """``(arch, args)`` an official checkpoint holds, read from its keys and shapes alone (a ``.pt``
    is memory-mapped where its format allows: no weights are copied). Raises ``CheckpointError``
    naming the file, as ``load_official`` does, for anything it could not load."""
    path = Path(path)
    return _infer_args(_read_state_dict(path), path, arch, scale, res_scale)


# --- reading ----------------------------------------------------------------------------------


def _edgesr_format(path: Path) -> str | None:
    """The ``format`` metadata of a ``.safetensors`` file, None for other files or no metadata."""
    if path.suffix != ".safetensors":
        return None
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            return (f.metadata() or {}).get("format")
    except Exception:  # safetensors has its own error types for corrupt headers
        return None


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """The file's tensors with containers unwrapped and ``module.`` / ``model.`` prefixes stripped."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    fmt = _edgesr_format(path)
    if fmt is not None and fmt.startswith("edgesr-checkpoint"):
        raise CheckpointError(f"{path}: an edgesr checkpoint, not an official one; use load_model")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(path)
        else:
            obj = torch_load_safely(path, "a state dict of tensors")
    except CheckpointError:
        raise
    except Exception as e:  # safetensors raises its own types for foreign or corrupt files
        raise CheckpointError(f"{path}: cannot read as a state dict of tensors ({e})") from e

    while isinstance(obj, dict) and not _all_tensors(obj):
        inner = next((obj[k] for k in _CONTAINERS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            raise CheckpointError(
                f"{path}: a dict with keys {sorted(map(str, obj))[:8]} and no {'/'.join(_CONTAINERS)} "
                "state dict inside"
            )
        obj = inner
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path}: expected a state dict, got {type(obj).__name__}")
    state = dict(obj)
    stripped = True
    while stripped:
        stripped = False
        for prefix in _PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                stripped = True
    return state


def torch_load_safely(path: str | Path, what: str) -> Any:
    """`torch.load(path, weights_only=True)`, with an error that names the file and says why it
    was refused. It never suggests `weights_only=False`, as torch's own message does: a file that
    needs it runs code of the file's choosing when loaded."""
    path = Path(path)
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": noise around our message
            warnings.simplefilter("ignore")
            return _torch_load(path)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        if found is None:  # torch says "Weights only load failed" for a cut-off pickle too
            raise CheckpointError(f"{path}: cannot read as {what}: truncated or corrupt pickle") from None
        raise CheckpointError(
            f"{path}: refused as {what}: it holds pickled Python objects ({found.group(1)}) besides "
            "tensors and plain containers, and loading those can run code (edgesr loads weights only); "
            "save the state dict alone (torch.save(model.state_dict(), path)) or as .safetensors"
        ) from None
    except Exception as e:  # zip/pickle readers raise RuntimeError, EOFError, OSError, ValueError
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "weights_only" in detail:
            detail = type(e).__name__
        raise CheckpointError(
            f"{path}: cannot read as {what}: truncated, corrupt or not a PyTorch file ({detail})"
        ) from None


def _torch_load(path: Path) -> Any:
    try:  # memory-map zip-format files so a large teacher is not copied just to read its keys
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (pre-1.6) files cannot be mmapped
        return torch.load(path, map_location="cpu", weights_only=True)


def _all_tensors(d: dict) -> bool:
    return all(isinstance(k, str) and isinstance(v, Tensor) for k, v in d.items())


# --- inferring the architecture ----------------------------------------------------------------


def _count(state: dict[str, Tensor], pattern: str) -> int:
    """``1 + `` the largest index captured by the regex ``pattern`` in a key, 0 when none matches.

    The largest index rather than the first gap, so that one renamed or missing key shows up as
    exactly that key in the mismatch error instead of shortening the inferred depth.
    """
    found = [int(m.group(1)) for k in state if (m := re.fullmatch(pattern, k))]
    return max(found) + 1 if found else 0


def _infer_args(
    state: dict[str, Tensor], path: Path, arch: str | None, scale: int | None, res_scale: float | None
) -> tuple[str, dict[str, Any]]:
    for key in ("head.0.weight", "tail.1.weight"):
        if key not in state:
            raise CheckpointError(f"{path}: missing key {key!r}; not an official EDSR/RCAN checkpoint")
    inferred = "rcan" if any(".conv_du." in k for k in state) else "edsr"
    if arch is not None and arch != inferred:
        raise CheckpointError(f"{path}: arch={arch!r} given but the keys are those of {inferred!r}")
    head = state["head.0.weight"]  # (F, 3, 3, 3)
    if head.ndim != 4 or head.shape[1] != 3:
        raise CheckpointError(
            f"{path}: key 'head.0.weight' has shape {tuple(head.shape)}, expected (F, 3, k, k)"
        )
    F = head.shape[0]

    # Upsampler convs sit at even indices of tail.0, each followed by its PixelShuffle.
    steps = (_count(state, r"tail\.0\.(\d+)\.weight") + 1) // 2
    first = state.get("tail.0.0.weight")
    if first is None:
        raise CheckpointError(f"{path}: missing key 'tail.0.0.weight' (the first upsampler conv)")
    if first.shape[0] == 4 * F:
        found = 2**steps
    elif first.shape[0] == 9 * F and steps == 1:
        found = 3
    else:
        raise CheckpointError(
            f"{path}: key 'tail.0.0.weight' has shape {tuple(first.shape)} with {steps} "
            f"upsampler convs; expected {4 * F} or {9 * F} output channels"
        )
    if scale is not None and scale != found:
        raise CheckpointError(f"{path}: scale={scale} given but the upsampler convs give x{found}")

    args: dict[str, Any] = {"scale": found, "n_feats": F}
    if inferred == "edsr":
        args["n_resblocks"] = _count(state, r"body\.(\d+)\.body\.\d+\.(weight|bias)")
        args["res_scale"] = res_scale if res_scale is not None else (0.1 if F == 256 else 1.0)
    else:
        args["n_resgroups"] = _count(state, r"body\.(\d+)\.body\.\d+\..+")
        args["n_resblocks"] = _count(state, r"body\.\d+\.body\.(\d+)\.body\..+")
        squeeze = state.get("body.0.body.0.body.3.conv_du.0.weight")  # (F / reduction, F, 1, 1)
        if squeeze is None or squeeze.shape[0] == 0 or F % squeeze.shape[0]:
            shape = None if squeeze is None else tuple(squeeze.shape)
            raise CheckpointError(
                f"{path}: key 'body.0.body.0.body.3.conv_du.0.weight' has shape {shape}; "
                f"expected (F / reduction, {F}, 1, 1)"
            )
        args["reduction"] = F // squeeze.shape[0]
        args["res_scale"] = res_scale if res_scale is not None else 1.0
    return inferred, args


def _source_range(state: dict[str, Tensor], path: Path, rgb_range: float | None) -> float:
    """The checkpoint's rgb_range: from its mean-shift biases (checked against DIV2K) or the default."""
    found: float | None = None
    mean = torch.tensor(DIV2K_RGB_MEAN, dtype=torch.float64)
    for name, sign in (("sub_mean", -1), ("add_mean", +1)):
        if f"{name}.bias" not in state:
            continue
        weight = state.get(f"{name}.weight")
        bias = state[f"{name}.bias"].double()
        r = float(bias.reshape(-1)[0] / (sign * mean[0])) if bias.numel() == 3 else float("nan")
        ok = bias.shape == (3,) and r > 0 and torch.allclose(bias, sign * r * mean, rtol=1e-3, atol=1e-6)
        eye = torch.eye(3, dtype=torch.float64).view(3, 3, 1, 1)
        ok = ok and (weight is None or (weight.shape == eye.shape and torch.allclose(weight.double(), eye)))
        if not ok or (found is not None and abs(r - found) > 1e-3 * found):
            raise CheckpointError(
                f"{path}: key {name + '.bias'!r} is not a DIV2K mean shift "
                f"(+/- rgb_range * {DIV2K_RGB_MEAN}); edgesr's MeanShift cannot represent it"
            )
        found = r
    if found is not None:
        found = float(round(found)) if abs(found - round(found)) < 1e-3 * found else found
        if rgb_range is not None and abs(rgb_range - found) > 1e-3 * found:
            raise CheckpointError(f"{path}: rgb_range={rgb_range} given but the mean shift says {found}")
        return found
    return float(rgb_range) if rgb_range is not None else 255.0


# --- mapping and rescaling ---------------------------------------------------------------------


def _key_map(name: str, args: dict[str, Any]) -> dict[str, str]:
    """Official key -> edgesr key for every parameter of the model ``name(**args)``."""
    convs = {"head.0": "head", "tail.1": "tail"}
    steps = 1 if args["scale"] == 3 else args["scale"].bit_length() - 1
    convs |= {f"tail.0.{2 * j}": f"upsample.{2 * j}" for j in range(steps)}
    if name == "edsr":
        n = args["n_resblocks"]
        for i in range(n):
            convs |= {f"body.{i}.body.0": f"body.{i}.conv1", f"body.{i}.body.2": f"body.{i}.conv2"}
        convs[f"body.{n}"] = "body_end"
    else:
        G, B = args["n_resgroups"], args["n_resblocks"]
        for g in range(G):
            for b in range(B):
                src, dst = f"body.{g}.body.{b}.body", f"body.{g}.blocks.{b}"
                convs |= {
                    f"{src}.0": f"{dst}.conv1",
                    f"{src}.2": f"{dst}.conv2",
                    f"{src}.3.conv_du.0": f"{dst}.attention.squeeze",
                    f"{src}.3.conv_du.2": f"{dst}.attention.excite",
                }
            convs[f"body.{g}.body.{B}"] = f"body.{g}.conv"
        convs[f"body.{G}"] = "body_end"
    return {f"{s}.{p}": f"{d}.{p}" for s, d in convs.items() for p in ("weight", "bias")}


_ATTENTION = re.compile(r"\.attention\.(squeeze|excite)\.(weight|bias)$")


def _rescale(key: str, value: Tensor, R: float) -> Tensor:
    """Move one edgesr-named tensor from [0, R] inputs to [0, 1] inputs (see the module docstring)."""
    m = _ATTENTION.search(key)
    if m is not None:  # inside channel attention: only the squeeze weight absorbs the 1/R scale
        return value * R if m.groups() == ("squeeze", "weight") else value
    return value / R if key.endswith(".bias") else value
