"""edgesr's MIL reference evaluator: run a saved Core ML ML program without Core ML.

Core ML itself runs only on Apple OSes. To check the *converted program* on Linux (its ops, their
parameters, its weights and quantization parameters as stored in the `.mlpackage`), this module
loads the program with coremltools' protobuf-to-MIL loader and evaluates it op by op: float32
compute with PyTorch CPU kernels for conv, NumPy for the rest, and every value the program types
as fp16 rounded to fp16 (storage precision; Core ML's fp16 *accumulation* is not modelled).

It is not the Core ML runtime: it says nothing about Core ML's kernels, compute-unit placement or
speed, and a result from it must be reported as "edgesr MIL reference evaluator", never as Core ML.
Ops it does not know raise NotImplementedError naming the op; it knows the ops edgesr's SR nets
convert to (conv, add, relu, concat, pixel_shuffle, q/dq, ...), listed in `OPS`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

NAME = "edgesr MIL reference evaluator (float32 compute, fp16-typed values rounded to fp16), not Core ML"
_INT_RANGE = {"int8": (-128, 127), "uint8": (0, 255)}


def load_program(path: str | Path) -> Any:
    """The `main` function of the saved `.mlpackage` as a PyMIL function (weights read from disk)."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load

    mlmodel = ct.models.MLModel(str(path), skip_model_load=True)
    spec = mlmodel.get_spec()
    return load(spec, spec.specificationVersion, file_weights_dir=mlmodel.weights_dir).functions["main"]


def _per_axis(v: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """A per-channel parameter (shape (C,)) broadcast along `axis` of an `ndim` tensor; scalars as is."""
    if v.ndim == 0:
        return v
    shape = [1] * ndim
    shape[axis] = v.size
    return v.reshape(shape)


def _affine_dequantize(a: dict[str, Any]) -> np.ndarray:
    q, axis = a["quantized_data"].astype(np.float32), int(a["axis"])
    zp = _per_axis(np.asarray(a["zero_point"], np.float32), axis, q.ndim)
    return (q - zp) * _per_axis(np.asarray(a["scale"], np.float32), axis, q.ndim)


def _quantize(a: dict[str, Any]) -> np.ndarray:
    x, axis = a["input"], int(a.get("axis") or 0)
    zp = _per_axis(np.asarray(a.get("zero_point", 0), np.float32), axis, x.ndim)
    lo, hi = _INT_RANGE[str(a["output_dtype"])]
    q = np.clip(np.rint(x / _per_axis(np.asarray(a["scale"], np.float32), axis, x.ndim)) + zp, lo, hi)
    return q.astype(np.int8 if lo < 0 else np.uint8)


def _dequantize(a: dict[str, Any]) -> np.ndarray:
    x, axis = a["input"].astype(np.float32), int(a.get("axis") or 0)
    zp = _per_axis(np.asarray(a.get("zero_point", 0), np.float32), axis, x.ndim)
    return (x - zp) * _per_axis(np.asarray(a["scale"], np.float32), axis, x.ndim)


def _conv_pad(a: dict[str, Any]) -> list[int]:
    """[top, bottom, left, right] input padding of a 2-D conv for its pad_type."""
    kind = str(a.get("pad_type", "valid"))
    if kind == "custom":
        return [int(p) for p in a["pad"]]
    if kind == "valid":
        return [0, 0, 0, 0]
    raise NotImplementedError(f"edgesr MIL evaluator: conv pad_type {kind!r}")


def _conv(a: dict[str, Any]) -> np.ndarray:
    x, w = torch.from_numpy(a["x"].astype(np.float32)), torch.from_numpy(a["weight"].astype(np.float32))
    if x.ndim != 4:
        raise NotImplementedError(f"edgesr MIL evaluator: conv of rank {x.ndim} (only 2-D convs)")
    t, b, left, r = _conv_pad(a)
    bias = None if a.get("bias") is None else torch.from_numpy(a["bias"].astype(np.float32))
    stride = [int(s) for s in a.get("strides", (1, 1))]
    dilation = [int(d) for d in a.get("dilations", (1, 1))]
    y = F.conv2d(F.pad(x, (left, r, t, b)), w, bias, stride, 0, dilation, int(a.get("groups", 1)))
    return y.numpy()


def _conv_transpose(a: dict[str, Any]) -> np.ndarray:
    x, w = torch.from_numpy(a["x"].astype(np.float32)), torch.from_numpy(a["weight"].astype(np.float32))
    t, b, left, r = _conv_pad(a)
    stride = [int(s) for s in a.get("strides", (1, 1))]
    dilation = [int(d) for d in a.get("dilations", (1, 1))]
    y = F.conv_transpose2d(x, w, None, stride, 0, 0, int(a.get("groups", 1)), dilation)
    y = y[:, :, t : y.shape[2] - b, left : y.shape[3] - r]  # MIL pads crop the full output
    if a.get("bias") is not None:
        y = y + torch.from_numpy(a["bias"].astype(np.float32)).view(1, -1, 1, 1)
    return y.numpy()


def _cast(a: dict[str, Any]) -> np.ndarray:
    dtype = str(a["dtype"])
    if dtype not in ("fp16", "fp32"):
        raise NotImplementedError(f"edgesr MIL evaluator: cast to {dtype!r} (only fp16/fp32)")
    return a["x"].astype(np.float32)  # rounded to the output's type by the caller


def _shuffle(a: dict[str, Any]) -> np.ndarray:
    return F.pixel_shuffle(torch.from_numpy(np.ascontiguousarray(a["x"])), int(a["upscale_factor"])).numpy()


def _concat(a: dict[str, Any]) -> np.ndarray:
    if a.get("interleave"):
        raise NotImplementedError("edgesr MIL evaluator: interleaved concat")
    return np.concatenate([np.asarray(v, np.float32) for v in a["values"]], axis=int(a["axis"]))


def _reduce_mean(a: dict[str, Any]) -> np.ndarray:
    axes = None if a.get("axes") is None else tuple(int(x) for x in np.atleast_1d(a["axes"]))
    return np.mean(a["x"], axis=axes, keepdims=bool(a.get("keep_dims", False)))


OPS: dict[str, Callable[[dict[str, Any]], np.ndarray]] = {
    "constexpr_affine_dequantize": _affine_dequantize,
    "quantize": _quantize,
    "dequantize": _dequantize,
    "conv": _conv,
    "conv_transpose": _conv_transpose,
    "pixel_shuffle": _shuffle,
    "add": lambda a: a["x"] + a["y"],
    "sub": lambda a: a["x"] - a["y"],
    "mul": lambda a: a["x"] * a["y"],
    "real_div": lambda a: a["x"] / a["y"],
    "maximum": lambda a: np.maximum(a["x"], a["y"]),
    "minimum": lambda a: np.minimum(a["x"], a["y"]),
    "relu": lambda a: np.maximum(a["x"], 0),
    "clip": lambda a: np.clip(a["x"], a["alpha"], a["beta"]),
    "reshape": lambda a: a["x"].reshape([int(s) for s in a["shape"]]),
    "transpose": lambda a: np.transpose(a["x"], [int(p) for p in a["perm"]]),
    "cast": _cast,
    "identity": lambda a: a["x"],
    "concat": _concat,  # XLSR's skip path
    "reduce_mean": _reduce_mean,  # RCAN's channel attention: global average pool ...
    "sigmoid": lambda a: 1.0 / (1.0 + np.exp(-a["x"])),  # ... and its gate
}


def _round_to_type(value: np.ndarray, var: Any) -> np.ndarray:
    from coremltools.converters.mil.mil import types

    dtype = types.builtin_to_string(var.dtype)
    if dtype == "fp16":
        return np.asarray(value, np.float16).astype(np.float32)
    return np.asarray(value, np.float32) if dtype == "fp32" else np.asarray(value)


def run_program(path: str | Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Evaluate the saved program on `inputs` ({name: float32 array}); returns {output name: float32}.

    Raises NotImplementedError naming the first op (and its output) the evaluator does not know.
    """
    fn = load_program(path)
    env: dict[str, np.ndarray] = {
        name: _round_to_type(np.asarray(inputs[name], np.float32), var) for name, var in fn.inputs.items()
    }
    for op in fn.operations:
        out = op.outputs[0]
        if op.op_type == "const":
            env[out.name] = np.asarray(out.val)
            continue
        impl = OPS.get(op.op_type)
        if impl is None:
            raise NotImplementedError(
                f"edgesr MIL evaluator does not know op {op.op_type!r} (output {out.name!r}); "
                f"known: {', '.join(sorted(OPS))}"
            )

        def value(v: Any) -> np.ndarray:
            return env[v.name] if v.name in env else np.asarray(v.val)

        # a tuple input (concat's `values`) is a tuple of vars, each looked up like a single one
        args = {
            k: [value(e) for e in v] if isinstance(v, tuple | list) else value(v)
            for k, v in op.inputs.items()
        }
        env[out.name] = _round_to_type(impl(args), out)
    return {v.name: env[v.name].astype(np.float32) for v in fn.outputs}
