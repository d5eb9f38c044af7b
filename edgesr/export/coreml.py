"""Core ML target: an ML program (`.mlpackage`, iOS 17+) made by coremltools 9 from `torch.export`.

| precision | how | weights | activations, I/O |
|---|---|---|---|
| fp16 (default) | `compute_precision=FLOAT16` | fp16 const | fp16, fp16 I/O |
| fp32 | `compute_precision=FLOAT32` (GPU/CPU only: the Neural Engine is fp16) | fp32 const | fp32 |
| int8, weight_only | fp16 program + `linear_quantize_weights` | int8 constexpr | fp16 |
| int8 (W8A8) | converted PT2E graph (`edgesr.quant`, "coreml") | int8 constexpr | int8 q/dq |

int8 weights are symmetric per output channel on every conv (`constexpr_affine_dequantize`); W8A8
activations are int8 per tensor (`quantize`/`dequantize` ops, fp16 compute between them).

coremltools' own activation quantizer (`linear_quantize_activations`) calibrates by running
`MLModel.predict`, which exists only on macOS; the PT2E path above converts on Linux too.

Core ML runs only on Apple OSes. On Linux `runs_here()` says so and verification is structural
(`validate`: spec I/O, program type, deployment target, op list, weight dtypes; see `coreml_mil`),
with `numerics_run=False`. `evaluate` runs the saved program with edgesr's own MIL reference
evaluator (`coreml_eval`), a check of the converted graph, not of the Core ML runtime.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from edgesr.export.base import EXPORTERS, UnsupportedOpError
from edgesr.export.coreml_eval import NAME as EVALUATOR_NAME
from edgesr.export.coreml_eval import run_program
from edgesr.export.coreml_mil import describe, io_dtypes, read_spec, validate
from edgesr.export.plan import ExportPlan, UnsupportedOptionError
from edgesr.sdk import import_sdk
from edgesr.targets import TARGETS

SPEC = TARGETS.get("coreml")

# iOS 17 / macOS 14 is the first target with the activation `quantize`/`dequantize` ops that W8A8
# needs; fp16 multi-array I/O and int8 constexpr weights need iOS 16. One target for all precisions.
DEPLOYMENT_TARGET = "iOS17"  # a `coremltools.target` member
INPUT, OUTPUT = "lr", "sr"
# I/O dtype by precision: fp16 programs take and return fp16 arrays, so no cast ops at the ends.
IO_DTYPE: dict[str, str] = {"fp32": "float32", "fp16": "float16", "int8": "float16"}
# Dynamic shapes: each of H and W may take any value in this range at run time (LR pixels).
DYNAMIC_RANGE: tuple[int, int] = (2, 4096)
# Conv-like MIL ops whose weights `linear_quantize_weights` quantizes for int8 weight-only.
WEIGHT_OPS: tuple[str, ...] = ("conv", "conv_transpose", "linear")
NOT_ON_LINUX = "Core ML runs only on macOS/iOS (coremltools MLModel.predict is unavailable on Linux)"


class CoremlExporter:
    spec = SPEC

    def _sdk(self) -> Any:
        (ct,) = import_sdk(SPEC.name, SPEC.sdk_label, SPEC.extra, "coremltools")
        return ct

    def sdk_versions(self) -> dict[str, str]:
        return {"coremltools": self._sdk().__version__}

    def runs_here(self, path: Path | None = None) -> str | None:
        """None on macOS (Core ML can run the artifact), else why it cannot run on this machine."""
        return None if sys.platform in SPEC.platforms else NOT_ON_LINUX

    def export(self, model: nn.Module, example: Tensor, path: Path, plan: ExportPlan) -> None:
        """Convert `model` (float, or the converted PT2E graph for W8A8) and save `path` (.mlpackage).

        Raises UnsupportedOpError naming the torch op coremltools cannot convert.
        """
        ct = self._sdk()
        program = _exported(model, example, plan.dynamic)
        dtype = np.float16 if IO_DTYPE[plan.precision] == "float16" else np.float32
        fp32 = plan.precision == "fp32"
        try:
            mlmodel = ct.convert(
                program,
                convert_to="mlprogram",
                minimum_deployment_target=getattr(ct.target, DEPLOYMENT_TARGET),
                compute_precision=ct.precision.FLOAT32 if fp32 else ct.precision.FLOAT16,
                inputs=[ct.TensorType(name=INPUT, shape=_input_shape(ct, example, plan), dtype=dtype)],
                outputs=[ct.TensorType(name=OUTPUT, dtype=dtype)],
            )
        except NotImplementedError as e:
            m = re.search(r"Unsupported fx node (\S+), kind (\S+)", str(e))
            if m is None:
                raise
            raise UnsupportedOpError(SPEC.name, _torch_op(program, m.group(1), m.group(2)), str(e)) from e
        if plan.weight_only:
            mlmodel = quantize_weights(mlmodel)
        mlmodel.save(str(path))

    def load(
        self, path: Path, threads: int | None = None, options: Mapping[str, str] | None = None
    ) -> Callable[[np.ndarray], np.ndarray]:
        """`MLModel.predict` with all compute units (macOS only; `threads` does not apply: Core ML
        schedules CPU/GPU/Neural Engine itself). float32 NCHW in -> float32 NCHW out."""
        self.spec.check_runtime_options(options or {})  # none: refuses any
        reason = self.runs_here()
        if reason is not None:
            raise RuntimeError(reason)
        ct = self._sdk()
        mlmodel = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.ALL)
        dtype = np.float16 if self.io_spec(path)["input"]["dtype"] == "float16" else np.float32

        def run(x: np.ndarray) -> np.ndarray:
            out = mlmodel.predict({INPUT: np.ascontiguousarray(x, dtype=dtype)})[OUTPUT]
            return np.asarray(out, dtype=np.float32)

        return run

    def run(self, path: Path, x: np.ndarray) -> np.ndarray:
        return self.load(path)(x)

    def validate(self, path: Path, plan: ExportPlan) -> dict[str, Any]:
        """Structural checks of the saved program against `plan` (see `coreml_mil.validate`)."""
        ct = self._sdk()
        target = getattr(ct.target, DEPLOYMENT_TARGET)
        return validate(path, plan, DEPLOYMENT_TARGET, int(target.value), IO_DTYPE[plan.precision])

    def evaluator(self) -> tuple[str, Callable[[Path, np.ndarray], np.ndarray]]:
        return EVALUATOR_NAME, self.evaluate

    def evaluate(self, path: Path, x: np.ndarray) -> np.ndarray:
        """Run the saved ML program with edgesr's MIL reference evaluator (not Core ML): float32
        NCHW in -> float32 NCHW out. Raises NotImplementedError naming an op it does not know."""
        self._sdk()
        return run_program(path, {INPUT: x})[OUTPUT]

    def io_spec(self, path: Path) -> dict[str, Any]:
        """{"input": {"dtype": ...}, "output": {"dtype": ...}} as the saved model declares them."""
        self._sdk()
        inp, out = io_dtypes(read_spec(path))
        return {"input": {"dtype": inp}, "output": {"dtype": out}}

    def delegation(self, path: Path) -> dict[str, Any]:
        """MIL op histogram and weight storage; compute-unit placement cannot be known off-device."""
        self._sdk()
        return describe(path)


def _exported(model: nn.Module, example: Tensor, dynamic: bool) -> Any:
    """`torch.export` (ATen dialect, as coremltools needs) of `model`; H and W free if `dynamic`."""
    import torch

    shapes = None
    if dynamic:
        lo, hi = DYNAMIC_RANGE
        dim = torch.export.Dim
        shapes = ({2: dim("height", min=lo, max=hi), 3: dim("width", min=lo, max=hi)},)
    return torch.export.export(model, (example,), dynamic_shapes=shapes).run_decompositions({})


def _input_shape(ct: Any, example: Tensor, plan: ExportPlan) -> Any:
    n, c, h, w = (int(v) for v in example.shape)
    if not plan.dynamic:
        return (n, c, h, w)
    lo, hi = DYNAMIC_RANGE
    if not (lo <= h <= hi and lo <= w <= hi):
        raise UnsupportedOptionError(f"coreml dynamic shapes: H and W must be in [{lo}, {hi}], got {h}x{w}")
    return ct.Shape((n, c, ct.RangeDim(lo, hi, default=h), ct.RangeDim(lo, hi, default=w)))


def _torch_op(program: Any, node_name: str, kind: str) -> str:
    """The torch op (e.g. 'aten.erfinv.default') of the fx node coremltools rejected."""
    for node in program.graph.nodes:
        if node.name == node_name:
            return str(node.target)
    return f"aten.{kind}"


def quantize_weights(mlmodel: Any) -> Any:
    """int8 weight-only: every conv/linear weight symmetric int8 per output channel, whatever its
    size (coremltools skips weights under 2048 elements by default), activations left in fp16."""
    from coremltools.optimize import coreml as cto

    cfg = cto.OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=0
    )
    config = cto.OptimizationConfig(op_type_configs=dict.fromkeys(WEIGHT_OPS, cfg))
    return cto.linear_quantize_weights(mlmodel, config)


EXPORTERS.register(SPEC.name)(CoremlExporter())
