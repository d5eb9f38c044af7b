"""TFLite / LiteRT target: litert-torch 0.10 converts, the ai-edge-litert 2.3 interpreter runs it.

| precision | how | I/O |
|---|---|---|
| fp32 | `litert_torch.convert(model, (x,))` | float32 NCHW |
| fp16 | fp32 graph + ai-edge-quantizer FLOAT_CASTING: fp16 weights, fp32 compute | float32 |
| int8 | the orchestrator's converted PT2E graph (litert), STATIC q/dq lowering | int8 in if quantized |
| int8 fully integer | the same from a fully annotated graph (`fully_integer=True`) | int8 in and out |
| int8 weight-only | fp32 graph + ai-edge-quantizer int8 weights, float compute | float32 |

`load()` always takes and returns float32 NCHW: it quantizes an int8 input and dequantizes an int8
output with the tensors' own (scale, zero_point), which `io_spec` reports in the manifest.

Upsamplers (measured with litert-torch 0.10; see `edgesr.export.tflite_graph`): PixelShuffle lowers to
a rank-4 RESHAPE/TRANSPOSE chain; `graphs.DepthToSpace` too, so float exports swap it for a custom op
lowered to one DEPTH_TO_SPACE; "transposed_conv" lowers to one TRANSPOSE_CONV that stays int8 in both
int8 modes and is delegated to XNNPACK. int8's default is the PixelShuffle chain (faster on both machine
kinds measured, edgesr.targets); dynamic H/W need "transposed_conv" (litert-torch
cannot lower the symbolic reshape of the other two) and a model litert-torch can trace with symbolic
H/W: the plain net converts, EDSR does not (its broadcast mean-shift add fails); that is an
UnsupportedOptionError naming the op.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from edgesr.export.base import EXPORTERS, ImageOnly, UnsupportedOpError
from edgesr.export.plan import ExportPlan, UnsupportedOptionError
from edgesr.export.tflite_graph import analyse_tflite, unsupported_op, with_tflite_depth_to_space
from edgesr.sdk import import_sdk
from edgesr.targets import TARGETS

SPEC = TARGETS.get("tflite")
MAX_SIDE = 4096  # dynamic exports: the largest LR height/width the graph accepts, pixels
_PACKAGES = ("litert-torch", "ai-edge-litert", "ai-edge-quantizer")


class TfliteExporter:
    spec = SPEC

    def _converter(self) -> Any:
        (litert_torch,) = import_sdk(SPEC.name, SPEC.sdk_label, SPEC.extra, "litert_torch")
        return litert_torch

    def _interpreter(self) -> Any:
        (mod,) = import_sdk(SPEC.name, SPEC.sdk_label, SPEC.extra, "ai_edge_litert.interpreter")
        return mod.Interpreter

    def sdk_versions(self) -> dict[str, str]:
        self._converter()
        self._interpreter()
        versions = {}
        for package in _PACKAGES:
            # ai-edge-quantizer is only needed (and asked for) by fp16 / weight-only exports
            with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                versions[package] = importlib.metadata.version(package)
        return versions

    def export(self, model: nn.Module, example: Tensor, path: Path, plan: ExportPlan) -> None:
        from torch.fx import GraphModule

        litert_torch = self._converter()
        int8_graph = plan.int8_activations
        kwargs: dict[str, Any] = {}
        if plan.dynamic:
            kwargs["dynamic_shapes"] = self._dynamic_shapes(plan, int8_graph)
        if int8_graph:
            kwargs["quant_config"] = _static_quant_config()
        else:  # float graphs: a real DEPTH_TO_SPACE op (the q/dq graph is already traced)
            model = with_tflite_depth_to_space(model)
        module = model if isinstance(model, GraphModule) else ImageOnly(model).eval()
        try:
            edge = litert_torch.convert(module, (example,), **kwargs)
        except Exception as e:  # litert-torch raises RuntimeError, TypeError, jax errors, ...
            op = unsupported_op(e)
            if plan.dynamic:  # e.g. EDSR's broadcast mean-shift add fails with symbolic H/W
                raise UnsupportedOptionError(
                    f"target 'tflite' could not convert this model with dynamic H/W (litert-torch fails on "
                    f"op {op or 'unknown'!r}: {str(e).splitlines()[0]}); export it with a fixed input size"
                ) from e
            if op is None:
                raise
            raise UnsupportedOpError(SPEC.name, op, str(e).splitlines()[0]) from e
        if plan.precision == "fp16" or plan.weight_only:
            self._quantize_weights(edge.model_content(), path, fp16=plan.precision == "fp16")
        else:
            edge.export(str(path))
        if plan.fully_integer:
            self._check_fully_integer(path)

    def _dynamic_shapes(self, plan: ExportPlan, int8_graph: bool) -> tuple[dict[int, Any]]:
        import torch

        upsampler = plan.upsampler
        if int8_graph:  # plan_export refuses this first (TargetSpec.dynamic_int8); kept for direct callers
            raise UnsupportedOptionError("target 'tflite' int8 exports have fixed input shapes")
        if upsampler != "transposed_conv":
            raise UnsupportedOptionError(
                f"target 'tflite' has dynamic H/W only with upsampler 'transposed_conv' (the default), not "
                f"{upsampler!r}: litert-torch 0.10 cannot lower PixelShuffle's reshape with symbolic H/W"
            )
        h = torch.export.Dim("height", min=1, max=MAX_SIDE)
        w = torch.export.Dim("width", min=1, max=MAX_SIDE)
        return ({2: h, 3: w},)

    def _quantize_weights(self, content: bytes, path: Path, *, fp16: bool) -> None:
        """fp16 (FLOAT_CASTING) or int8 (per-channel min/max) weights, float compute (ai-edge-quantizer)."""
        quantizer, qtyping, algorithms = import_sdk(
            SPEC.name, "LiteRT ai-edge-quantizer", SPEC.extra, "ai_edge_quantizer.quantizer",
            "ai_edge_quantizer.qtyping", "ai_edge_quantizer.algorithm_manager",
        )  # fmt: skip
        names = algorithms.AlgorithmName
        q = quantizer.Quantizer(content)
        q.add_weight_only_config(
            regex=".*",
            operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
            num_bits=16 if fp16 else 8,
            algorithm_key=names.FLOAT_CASTING if fp16 else names.MIN_MAX_UNIFORM_QUANT,
        )
        q.quantize(enable_progress_report=False).export_model(path, overwrite=True)

    def _check_fully_integer(self, path: Path) -> None:
        """Refuse a "fully integer" artifact that still has float I/O or a float op."""
        report = analyse_tflite(path)
        floats = sorted(report["float_ops"] or {})
        io_float = [k for k, v in report["io"].items() if v["dtype"] != "int8"]
        if floats or io_float or not report["integer"]:
            op = floats[0] if floats else f"{io_float[0] if io_float else 'graph'} (float)"
            raise UnsupportedOpError(
                SPEC.name, op,
                f"a fully-integer graph was requested but float ops {floats} and float I/O {io_float} remain",
            )  # fmt: skip

    def load(
        self, path: Path, threads: int | None = None, options: Mapping[str, str] | None = None
    ) -> Callable[[np.ndarray], np.ndarray]:
        self.spec.check_runtime_options(options or {})  # none: refuses any
        interpreter = self._interpreter()(model_path=str(path), num_threads=threads)
        interpreter.allocate_tensors()
        state = {"in": interpreter.get_input_details()[0], "out": interpreter.get_output_details()[0]}

        def run(x: np.ndarray) -> np.ndarray:
            x = np.ascontiguousarray(x, dtype=np.float32)
            if tuple(x.shape) != tuple(state["in"]["shape"]):  # a dynamic artifact at a new size
                interpreter.resize_tensor_input(state["in"]["index"], list(x.shape), strict=True)
                interpreter.allocate_tensors()
                state["in"] = interpreter.get_input_details()[0]
                state["out"] = interpreter.get_output_details()[0]
            interpreter.set_tensor(state["in"]["index"], _to_tensor(x, state["in"]))
            interpreter.invoke()
            return _from_tensor(interpreter.get_tensor(state["out"]["index"]), state["out"])

        return run

    def run(self, path: Path, x: np.ndarray) -> np.ndarray:
        return self.load(path)(x)

    def runs_here(self, path: Path | None = None) -> str | None:
        return None  # the ai-edge-litert interpreter runs every LiteRT artifact edgesr makes

    def validate(self, path: Path, plan: ExportPlan) -> dict[str, Any]:
        return {"checks": {}, "passed": True}  # numerics always run here (runs_here is None)

    def evaluator(self) -> None:
        return None

    def delegation(self, path: Path) -> dict[str, Any]:
        """Op histogram, XNNPACK partitions and delegated fraction, CPU fallbacks, float islands."""
        self._interpreter()
        return {"delegate": "XNNPACK (LiteRT default)", **analyse_tflite(path)}

    def io_spec(self, path: Path) -> dict[str, Any]:
        """The artifact's own I/O dtypes; for int8 tensors their scale and zero point."""
        interpreter = self._interpreter()(model_path=str(path))
        spec: dict[str, Any] = {}
        tensors = {"input": interpreter.get_input_details()[0], "output": interpreter.get_output_details()[0]}
        for key, d in tensors.items():
            if np.dtype(d["dtype"]) == np.float32:
                continue
            scale, zero_point = d["quantization"]
            spec[key] = {
                "dtype": np.dtype(d["dtype"]).name,
                "quantization": {"scale": float(scale), "zero_point": int(zero_point)},
                "note": "int8 = clip(round(x / scale) + zero_point); x = (int8 - zero_point) * scale",
            }
        return spec


def _static_quant_config() -> Any:
    """litert-torch's STATIC q/dq lowering mode. The converter reads only `global_config.is_dynamic`
    from the quantizer; the graph's own q/dq ops carry the quantization."""
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig

    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    return QuantConfig(pt2e_quantizer=quantizer)


def _to_tensor(x: np.ndarray, details: dict[str, Any]) -> np.ndarray:
    """float32 -> the input tensor's dtype (int8: with its scale and zero point)."""
    dtype = np.dtype(details["dtype"])
    if dtype == np.float32:
        return x
    scale, zero_point = details["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(dtype)


def _from_tensor(y: np.ndarray, details: dict[str, Any]) -> np.ndarray:
    """The output tensor -> float32 (int8: dequantized with its scale and zero point)."""
    if np.dtype(details["dtype"]) == np.float32:
        return y
    scale, zero_point = details["quantization"]
    return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)


EXPORTERS.register(SPEC.name)(TfliteExporter())
