"""ONNX target: `torch.onnx.export` (TorchScript front end, opset 17) run on ONNX Runtime's CPU EP.

| precision | what is exported | I/O |
|---|---|---|
| fp32 | the float model | float32 |
| int8 | the converted PT2E graph (edgesr's PTQ or QAT; backend `onnxruntime`) as a QDQ model: each
  quantize / dequantize op becomes `QuantizeLinear` / `DequantizeLinear`, int8 weights stay int8
  initializers behind a per-channel `DequantizeLinear` (axis 0) | float32 |

The QDQ form is what ONNX Runtime's own quantizer writes (S8S8: int8 activations per tensor, int8
weights symmetric per output channel): its CPU EP fuses each DQ -> Conv -> Q into one int8 conv at
load time, and ORT Mobile takes the same file. With `float-ends` the convs reading
the image stay float; ORT itself quantizes a float-weight conv that sits between a DequantizeLinear
and a QuantizeLinear (the float-ends tail conv), so on ORT the tail runs int8 too: the verification
measures the file as ORT runs it (plain net: 64 dB against the PT2E graph, against inf dB all-int8).
fp16 is not implemented and says so.
"""

from __future__ import annotations

import copy
import functools
import operator
import re
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from edgesr.export.base import EXPORTERS, ImageOnly, UnsupportedOpError, float_io
from edgesr.export.plan import ExportPlan
from edgesr.sdk import import_sdk
from edgesr.targets import TARGETS

OPSET = 17
INPUT, OUTPUT = "lr", "sr"
PROVIDERS = ["CPUExecutionProvider"]


class OnnxExporter:
    spec = TARGETS.get("onnx")
    io_spec = staticmethod(float_io)

    def _sdk(self) -> tuple[Any, Any]:
        onnx, ort = import_sdk(self.spec.name, self.spec.sdk_label, self.spec.extra, "onnx", "onnxruntime")
        return onnx, ort

    def sdk_versions(self) -> dict[str, str]:
        onnx, ort = self._sdk()
        return {"onnx": onnx.__version__, "onnxruntime": ort.__version__}

    def export(self, model: nn.Module, example: Tensor, path: Path, plan: ExportPlan) -> None:
        from torch.onnx.errors import UnsupportedOperatorError

        self._sdk()
        axes = {INPUT: {2: "height", 3: "width"}, OUTPUT: {2: "out_height", 3: "out_width"}}
        if plan.int8_activations:  # fixed shapes: plan_export refuses --dynamic (TargetSpec.dynamic_int8)
            model = _qdq_module(model)
        try:
            with warnings.catch_warnings():
                # dynamo=False is deliberate: the torch.export front end needs onnxscript, which the
                # pinned extra does not install; the TorchScript one warns that it is legacy.
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.onnx.export(
                    ImageOnly(model),
                    (example,),
                    str(path),
                    dynamo=False,
                    opset_version=OPSET,
                    input_names=[INPUT],
                    output_names=[OUTPUT],
                    dynamic_axes=axes if plan.dynamic else None,
                    # folding would turn every DequantizeLinear(int8 weight) into a float weight
                    do_constant_folding=not plan.int8_activations,
                )
        except UnsupportedOperatorError as e:
            m = re.search(r"operator '([^']+)'", str(e))
            raise UnsupportedOpError(self.spec.name, m.group(1) if m else "unknown", str(e)) from e

    def load(
        self, path: Path, threads: int | None = None, options: Mapping[str, str] | None = None
    ) -> Callable[[np.ndarray], np.ndarray]:
        options = self.spec.check_runtime_options(options or {})
        _, ort = self._sdk()
        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        if options.get("spinning") == "disabled":
            # ORT's documented session config keys (onnxruntime_session_options_config_keys.h)
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        session = ort.InferenceSession(str(path), sess_options=opts, providers=PROVIDERS)

        def run(x: np.ndarray) -> np.ndarray:
            return session.run([OUTPUT], {INPUT: np.ascontiguousarray(x, dtype=np.float32)})[0]

        return run

    def run(self, path: Path, x: np.ndarray) -> np.ndarray:
        return self.load(path)(x)

    def runs_here(self, path: Path | None = None) -> str | None:
        return None  # onnxruntime's CPU provider runs everywhere the wheel installs

    def validate(self, path: Path, plan: ExportPlan) -> dict[str, Any]:
        return {"checks": {}, "passed": True}  # numerics always run here (runs_here is None)

    def evaluator(self) -> None:
        return None

    def delegation(self, path: Path) -> dict[str, Any]:
        """ONNX op histogram; with only the CPU EP registered, ORT runs every node on it.

        `ops` is the file's; `optimized_ops` is what ORT runs after its portable (EXTENDED) graph
        optimizations, where a QDQ model's DQ -> Conv -> Q become QLinearConv (an int8 conv). An int8
        file whose convs are still `Conv` there runs them in float.
        """
        onnx, ort = self._sdk()
        proto = onnx.load(str(path))
        ops = _histogram(proto)
        n = sum(ops.values())
        opset = max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
        with tempfile.TemporaryDirectory() as tmp:
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
            opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
            ort.InferenceSession(str(path), sess_options=opts, providers=PROVIDERS)
            optimized = _histogram(onnx.load(opts.optimized_model_filepath))
        return {
            "opset": opset,
            "nodes": n,
            "ops": ops,
            "optimized_ops": optimized,
            "providers": {PROVIDERS[0]: {"nodes": n, "ops": ops}},
            "delegated_fraction": 1.0,
        }


def _histogram(proto: Any) -> dict[str, int]:
    return dict(sorted(Counter(n.op_type for n in proto.graph.node).items()))


# ---- int8: the converted PT2E graph as a QDQ model ----

_SCALAR_TYPES = {0: torch.uint8, 1: torch.int8}  # c10::ScalarType codes of the 8-bit types
_FULL_RANGE = {torch.uint8: (0, 255), torch.int8: (-128, 127)}


def _q_args(op: str, scale: Any, zero_point: Any, quant_min: Any, quant_max: Any, dtype: Any) -> tuple:
    """(scale, zero point) constants of a per-tensor q/dq op, refusing what ONNX's 8-bit QuantizeLinear
    cannot say: another type, or a clamp range narrower than the type's (QuantizeLinear saturates to
    the full range). The backend refuses 16-bit activations before this."""
    from torch.onnx import symbolic_helper as sh

    dt = _SCALAR_TYPES.get(sh._parse_arg(dtype, "i"))
    lo, hi = sh._parse_arg(quant_min, "i"), sh._parse_arg(quant_max, "i")
    if dt is None or (lo, hi) != _FULL_RANGE[dt]:
        raise UnsupportedOpError(
            "onnx", f"quantized_decomposed::{op}",
            f"ONNX int8 takes 8-bit q/dq over the type's full range, got {dt} in [{lo}, {hi}]",
        )  # fmt: skip
    s = torch.tensor(sh._parse_arg(scale, "f"), dtype=torch.float32)
    return s, torch.tensor(sh._parse_arg(zero_point, "i"), dtype=dt)


def _quantize_per_tensor(g: Any, x: Any, scale: Any, zp: Any, lo: Any, hi: Any, dtype: Any, *_: Any) -> Any:
    s, z = _q_args("quantize_per_tensor", scale, zp, lo, hi, dtype)
    return g.op("QuantizeLinear", x, g.op("Constant", value_t=s), g.op("Constant", value_t=z))


def _dequantize_per_tensor(g: Any, x: Any, scale: Any, zp: Any, lo: Any, hi: Any, dtype: Any, *_: Any) -> Any:
    s, z = _q_args("dequantize_per_tensor", scale, zp, lo, hi, dtype)
    return g.op("DequantizeLinear", x, g.op("Constant", value_t=s), g.op("Constant", value_t=z))


def _dequantize_per_channel(g: Any, w: Any, scales: Any, zps: Any, axis: Any, *_: Any) -> Any:
    from torch.onnx import symbolic_helper as sh

    # zero points are int8 buffers (see _qdq_module): DequantizeLinear wants them of the weight's type
    return g.op("DequantizeLinear", w, scales, zps, axis_i=sh._parse_arg(axis, "i"))


@functools.cache
def _register_qdq_symbolics() -> None:
    """Teach the TorchScript exporter the PT2E q/dq ops (torch.ops.quantized_decomposed)."""
    for op, fn in (
        ("quantize_per_tensor", _quantize_per_tensor),
        ("dequantize_per_tensor", _dequantize_per_tensor),
        ("dequantize_per_channel", _dequantize_per_channel),
    ):
        torch.onnx.register_custom_op_symbolic(f"quantized_decomposed::{op}", fn, OPSET)


class _QDQGraph(nn.Module):
    """A converted PT2E graph, traceable by the TorchScript exporter: its tensors are buffers (so the
    tracer records ops on them instead of folding them into float constants) and `train()` is a no-op
    (a converted graph refuses train/eval switches, which the exporter makes)."""

    def __init__(self, graph: nn.Module) -> None:
        super().__init__()
        self.graph = graph

    def train(self, mode: bool = True) -> _QDQGraph:
        return self

    def forward(self, x: Tensor) -> Tensor:
        out = self.graph(x)
        return out[0] if isinstance(out, tuple | list) else out


def _qdq_module(converted: nn.Module) -> nn.Module:
    """A copy of `converted` ready for the QDQ export; the caller's graph (the verification
    reference) is left as it was."""
    _register_qdq_symbolics()
    graph = copy.deepcopy(converted)
    known = {n for n, _ in graph.named_parameters()} | {n for n, _ in graph.named_buffers()}
    per_channel_zps = {
        n.args[2].target
        for n in graph.graph.nodes
        if n.target is torch.ops.quantized_decomposed.dequantize_per_channel.default
    }
    for node in graph.graph.nodes:
        if node.op != "get_attr":
            continue
        value = operator.attrgetter(node.target)(graph)
        if not isinstance(value, Tensor):
            continue
        if node.target in known and node.target not in per_channel_zps:
            continue  # parameters and buffers: the tracer already records ops on them
        value = value.detach()
        if node.target in per_channel_zps:
            value = value.to(torch.int8)  # all zeros (symmetric weights); int64 in the PT2E graph
        *parents, name = node.target.split(".")
        owner = operator.attrgetter(".".join(parents))(graph) if parents else graph
        delattr(owner, name)
        owner.register_buffer(name, value)
    for p in graph.parameters():
        p.requires_grad_(False)  # the tracer stores them as initializers; grad-requiring ones it refuses
    return _QDQGraph(graph)


EXPORTERS.register(OnnxExporter.spec.name)(OnnxExporter())
