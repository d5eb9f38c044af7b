"""What a .tflite graph holds and how LiteRT runs it; the TFLite-native DEPTH_TO_SPACE upsampler.

`analyse_tflite(path)` answers the converters issue's question "what will run where" for one artifact:
the op histogram of the file, which ops the XNNPACK delegate (applied by default by the LiteRT
interpreter) takes and in how many partitions, which ops fall back to the builtin CPU kernels, and,
for an int8 graph, which ops compute in float (float islands). Measured with ai-edge-litert 2.3: a
delegated partition shows up after `allocate_tensors()` as an extra DELEGATE node whose inputs and
outputs are the partition's boundary tensors; the original nodes stay listed, so the nodes of a
partition are those reached walking back from its outputs to its inputs.

`with_tflite_depth_to_space(model)` swaps every `edgesr.export.graphs.DepthToSpace` (a DCR
reshape/permute, which litert-torch 0.10 lowers to RESHAPE/TRANSPOSE chains) for a custom op that
litert-torch lowers to one TFLite DEPTH_TO_SPACE (same DCR channel order, NHWC).
"""

from __future__ import annotations

import copy
import functools
import re
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from edgesr.export.graphs import DepthToSpace

QUANT_BOUNDARY = ("QUANTIZE", "DEQUANTIZE")
_LOWERING_MISSING = re.compile(r"Lowering not found: ([\w.]+)")
_FAILED_NODE = re.compile(r"While executing %\w+ : .*?target=(?:torch\.ops\.)?([\w.]+)")


def unsupported_op(error: BaseException) -> str | None:
    """The torch op a litert-torch conversion error is about ("aten._linalg_svd.default"), or None.

    litert-torch raises "Lowering not found: <op>" for an op it has no lowering for, and names the FX
    node it was lowering ("While executing %x : ... target=torch.ops.<op>") when a lowering fails.
    """
    text = str(error)
    m = _LOWERING_MISSING.search(text) or _FAILED_NODE.search(text)
    return m.group(1) if m else None


def _dtype_name(details: dict[str, Any]) -> str:
    return details["dtype"].__name__


def _io(details: dict[str, Any]) -> dict[str, Any]:
    """Name, shape, dtype and (int8) quantization of an input/output tensor."""
    out: dict[str, Any] = {
        "tensor": details["name"],
        "shape": [int(v) for v in details["shape_signature"]],
        "dtype": _dtype_name(details),
    }
    scale, zero_point = details["quantization"]
    if out["dtype"] in ("int8", "uint8", "int16"):
        out["quantization"] = {"scale": float(scale), "zero_point": int(zero_point)}
    return out


def analyse_tflite(path: Path) -> dict[str, Any]:
    """Op histogram, XNNPACK delegation, float islands and I/O of the .tflite at `path`.

    Returns {"ops": {op: n}, "nodes": n, "partitions": n, "delegated_nodes": n, "delegated_fraction":
    0..1, "delegated_ops": {op: n}, "cpu_ops": {op: n}, "integer": bool, "float_ops": {op: n} or None,
    "quant_boundaries": n, "io": {"input": {...}, "output": {...}}, "gpu_compatible": bool or None}.
    `float_ops` (int8 graphs only): ops other than QUANTIZE/DEQUANTIZE with a float output.
    """
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()  # applies the default XNNPACK delegate
    nodes = it._get_ops_details()
    ops = [n for n in nodes if n["op_name"] != "DELEGATE"]
    producer = {int(t): i for i, n in enumerate(ops) for t in n["outputs"]}
    partitions: list[set[int]] = []
    for d in (n for n in nodes if n["op_name"] == "DELEGATE"):
        boundary = {int(t) for t in d["inputs"]}
        part: set[int] = set()
        stack = [int(t) for t in d["outputs"]]
        while stack:
            t = stack.pop()
            if t in boundary or t not in producer or producer[t] in part:
                continue
            part.add(producer[t])
            stack.extend(int(u) for u in ops[producer[t]]["inputs"] if u >= 0)
        partitions.append(part)
    delegated = set().union(*partitions)

    def out_dtype(i: int) -> str:
        return _dtype_name(it._get_tensor_details(int(ops[i]["outputs"][0]), 0))

    computed = [i for i, n in enumerate(ops) if n["op_name"] not in QUANT_BOUNDARY]
    integer = any(out_dtype(i) in ("int8", "int16") for i in computed)
    float_ops = Counter(ops[i]["op_name"] for i in computed if out_dtype(i).startswith("float"))
    return {
        "ops": dict(sorted(Counter(n["op_name"] for n in ops).items())),
        "nodes": len(ops),
        "partitions": len(partitions),
        "delegated_nodes": len(delegated),
        "delegated_fraction": round(len(delegated) / len(ops), 4) if ops else 0.0,
        "delegated_ops": dict(sorted(Counter(ops[i]["op_name"] for i in delegated).items())),
        "cpu_ops": dict(
            sorted(Counter(n["op_name"] for i, n in enumerate(ops) if i not in delegated).items())
        ),
        "integer": integer,
        "float_ops": dict(sorted(float_ops.items())) if integer else None,
        "quant_boundaries": sum(n["op_name"] in QUANT_BOUNDARY for n in ops),
        "io": {"input": _io(it.get_input_details()[0]), "output": _io(it.get_output_details()[0])},
        "gpu_compatible": gpu_compatible(path),
    }


def gpu_compatible(path: Path) -> bool | None:
    """LiteRT's model analyzer verdict on the mobile GPU delegate (structural; no GPU runs here).

    None when the analyzer (a private module of ai-edge-litert) is not there.
    """
    try:
        from ai_edge_litert._pywrap_analyzer_wrapper import ModelAnalyzer
    except ImportError:
        return None
    report = ModelAnalyzer(str(path), True, True)  # (model, input is a path, check GPU compatibility)
    return "looks compatible with GPU delegate" in report


# ----------------------------------------------------------------------------- DEPTH_TO_SPACE
@functools.cache
def _depth_to_space_op() -> Any:
    """Register (once) `edgesr_tfl::depth_to_space_nhwc` and its litert-torch lowering to
    `tfl.depth_to_space`. Uses litert-torch's lowering registry, as its own torch_tfl ops do."""
    from litert_converter.mlir import ir
    from litert_converter.mlir.dialects import stablehlo
    from litert_torch.backend.lowerings import registry
    from litert_torch.backend.lowerings import utils as lowering_utils

    @torch.library.custom_op("edgesr_tfl::depth_to_space_nhwc", mutates_args=())
    def depth_to_space_nhwc(x: Tensor, block_size: int) -> Tensor:
        n, h, w, crr = x.shape
        r = block_size
        # NHWC DCR: channel (dy*r + dx)*C + c at (h, w) -> (h*r + dy, w*r + dx, c)
        y = x.reshape(n, h, w, r, r, crr // (r * r)).permute(0, 1, 3, 2, 4, 5)
        return y.reshape(n, h * r, w * r, crr // (r * r)).clone()

    @depth_to_space_nhwc.register_fake
    def _(x: Tensor, block_size: int) -> Tensor:
        n, h, w, crr = x.shape
        return x.new_empty(n, h * block_size, w * block_size, crr // (block_size * block_size))

    @registry.lower(torch.ops.edgesr_tfl.depth_to_space_nhwc.default)
    def _lower(lctx: Any, x: Any, block_size: int) -> Any:
        attrs = ir.DictAttr.get(
            {"block_size": ir.IntegerAttr.get(ir.IntegerType.get_signless(32), block_size)}
        )
        return stablehlo.custom_call(
            result=lowering_utils.node_meta_to_ir_types(lctx.node),
            inputs=[x],
            call_target_name=ir.StringAttr.get("tfl.depth_to_space"),
            has_side_effect=ir.BoolAttr.get(False),
            backend_config=ir.StringAttr.get(str(attrs)),
        )

    return torch.ops.edgesr_tfl.depth_to_space_nhwc.default


class TfliteDepthToSpace(nn.Module):
    """`graphs.DepthToSpace` on NCHW tensors, lowered by litert-torch to one DEPTH_TO_SPACE:
    ``(N, r*r*C, H, W) -> (N, C, r*H, r*W)``, the same numbers."""

    def __init__(self, block_size: int) -> None:
        super().__init__()
        self.block_size = block_size
        self.op = _depth_to_space_op()

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x.permute(0, 2, 3, 1), self.block_size).permute(0, 3, 1, 2)


def with_tflite_depth_to_space(model: nn.Module) -> nn.Module:
    """A copy of `model` with every `graphs.DepthToSpace` replaced by `TfliteDepthToSpace`;
    `model` itself when it has none."""
    names = [name for name, m in model.named_modules() if isinstance(m, DepthToSpace)]
    if not names:
        return model
    out = copy.deepcopy(model)
    for name in names:
        parent, _, child = name.rpartition(".")
        holder = out.get_submodule(parent) if parent else out
        setattr(holder, child, TfliteDepthToSpace(out.get_submodule(name).block_size))
    return out
