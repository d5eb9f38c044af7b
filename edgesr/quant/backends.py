"""Backend quantizers: which PT2E quantizer each export target's INT8 path uses.

| backend | export target | quantizer | SDK extra |
|---|---|---|---|
| xnnpack | executorch | ExecuTorch `XNNPACKQuantizer` | executorch |
| litert | tflite | litert-torch `PT2EQuantizer` (QAT shim below) | tflite |
| coreml | coreml | `edgesr.quant.annotate.W8A8Quantizer` (coremltools' `CoreMLQuantizer` needs the
  `torch.ao.quantization.quantizer` module that torch 2.13 removed) | coreml |
| onnxruntime | onnx | `edgesr.quant.annotate.W8A8Quantizer` (ONNX Runtime quantizes ONNX files, not
  PT2E graphs; this is its S8S8 QDQ scheme) | onnx |

All four: int8 weights per output channel (symmetric), int8 activations per tensor. ONNX Runtime's
weights are 7-bit ([-63, 63], WEIGHT_MAX): its x86 int8 convolutions on CPUs without VNNI (AVX2,
AVX-512 without VNNI) multiply u8 activations by s8 weights with VPMADDUBSW, whose int16 pair sums
saturate for weights outside [-64, 63] (ONNX Runtime's quantization docs, "reduce_range"). Measured on
an AVX2-only AMD EPYC (Zen 3): an EDSR 16x16 x4 int8 model came out of ORT 35.5 dB from its own q/dq
graph with 8-bit weights (verification refused it) and 53.4 dB with 7-bit weights. ORT's
`session.x64quantprecision` option, meant to convert such weights at load time, fails to initialise
a QDQ session in onnxruntime 1.31.1 here ("Attempt to replace the existing tensor").
`fully_integer=True` adds `annotate_float_islands` (int8 I/O; add, clamp and depth-to-space
quantized too). Every SDK is imported inside `get_quantizer`, through `import_sdk`, so that
`import edgesr.quant` works on machines without any of them.
"""

from __future__ import annotations

from typing import Any

from torch.fx import GraphModule

from edgesr.errors import UsageError
from edgesr.quant.precision import ACTIVATIONS
from edgesr.registry import unknown_name_message
from edgesr.sdk import import_sdk
from edgesr.targets import TARGETS, quant_backends, target_of_backend

__all__ = [
    "BACKENDS", "TARGET_BACKEND", "check_activations", "check_backend", "default_activations",
    "default_estimator", "get_quantizer",
    "litert_quantizer_class", "require_torchao",
]  # fmt: skip

# Which backend each target quantizes for is a target fact (edgesr.targets); these are views of it.
BACKENDS: tuple[str, ...] = quant_backends()
TARGET_BACKEND: dict[str, str] = {s.name: s.quant_backend for s in TARGETS.values() if s.quant_backend}
# Largest |weight| in int8 units per backend (default 127); see the module docstring for ORT's 63.
WEIGHT_MAX: dict[str, int] = {"onnxruntime": 63}
_QUANTIZER_MODULE = {  # backend -> the SDK module its quantizer comes from
    "xnnpack": "executorch.backends.xnnpack.quantizer.xnnpack_quantizer",
    "litert": "litert_torch.quantize.pt2e_quantizer",
    "coreml": "coremltools",
    "onnxruntime": "onnxruntime",
}


def _import_quantizer_sdk(backend: str) -> Any:
    """The backend's quantizer module, or MissingSDKError naming its target's pip extra."""
    spec = target_of_backend(backend)
    (mod,) = import_sdk(spec.name, spec.sdk_label, spec.extra, _QUANTIZER_MODULE[backend])
    return mod


def check_activations(backend: str, activations: str, fully_integer: bool) -> str:
    """`activations` if `backend` can quantize that way (edgesr.quant.precision), else a UsageError."""
    if activations not in ACTIVATIONS:
        raise UsageError(unknown_name_message("activations policy", activations, ACTIVATIONS))
    if fully_integer and activations == "float-ends":
        raise UsageError("a fully-integer graph has no float op: use activations 'int8' or 'int16-ends'")
    if activations == "float-ends" and not target_of_backend(check_backend(backend)).float_ends:
        raise UsageError(f"{backend}: int8 with float ends is not verified on its target; use 'int8'")
    if activations.startswith("int16") and backend != "litert":
        raise UsageError(f"{backend} has no 16-bit activation kernels; use activations 'float-ends'")
    return activations


def default_activations(backend: str, fully_integer: bool) -> str:
    """The activations policy int8 uses for `backend` when none is asked for, in PTQ and QAT alike.

    Float ends (the input shift, head conv, global skip, last conv and output stay float; the body is
    int8) where the backend's target verifies them and the graph may hold float ops; else all int8.
    Measured on 14 real photos (docs/quantization.md): PTQ's mean / worst-photo loss 0.66 / 2.18 dB
    all-int8 -> 0.21 / 0.97 dB with float ends and min/max ranges (XNNPACK).
    """
    float_ends = target_of_backend(check_backend(backend)).float_ends
    return "float-ends" if float_ends and not fully_integer else "int8"


def default_estimator(activations: str) -> str:
    """The activation range estimator that goes with `activations` when none is asked for.

    With float ends min/max: the int8 body's ranges are then wide enough for high-contrast photos
    (Grey: -0.95 -> -0.12 dB) and the ends, whose coarse grid min/max would cost on dark photos, are
    float. All int8: the histogram (min/max everywhere measured worse on dark photos, 2.74 dB worst).
    """
    return "minmax" if activations == "float-ends" else "histogram"


def check_backend(backend: str) -> str:
    """`backend` if it is one of BACKENDS, else a ValueError listing them."""
    if backend not in BACKENDS:
        raise UsageError(unknown_name_message("quantization backend", backend, BACKENDS))
    return backend


def require_torchao() -> None:
    """Import torchao's PT2E package, or raise MissingSDKError: training machines may lack it."""
    import_sdk("quantization", "torchao (PT2E quantization)", "quant", "torchao.quantization.pt2e")


def litert_quantizer_class() -> type:
    """litert-torch's `PT2EQuantizer` with the QAT bug worked around (imports the SDK).

    The bug: with `is_qat=True`, litert-torch annotates conv-batchnorm patterns by handing a bare
    function to torchao's `_get_aten_graph_module_for_pattern`, and `prepare_qat_pt2e` fails with
    "Expected 'mod' to be an instance of torch.nn.Module, got function". edgesr's networks have no
    batch norm, so the shim skips those QAT-only annotators and refuses a graph that has a batch
    norm (which it would otherwise leave unquantized). Conv, conv-ReLU, add, etc. are annotated by
    litert-torch's own code, so the converter sees exactly the annotations it expects.
    """
    require_torchao()
    mod = _import_quantizer_sdk("litert")
    from edgesr.quant.annotate import annotate_float_islands  # needs torchao, an optional extra
    from edgesr.quant.precision import annotate_activations

    class LiteRTQuantizer(mod.PT2EQuantizer):
        STATIC_QAT_ONLY_OPS: list[str] = []  # the conv-bn annotators that trip the bug

        def __init__(self, fully_integer: bool = False, activations: str = "int8") -> None:
            super().__init__()
            self.fully_integer = fully_integer
            self.activations = activations

        def annotate(self, model: GraphModule) -> GraphModule:
            bn = [n.name for n in model.graph.nodes if "batch_norm" in str(n.target)]
            if bn and self.global_config is not None and self.global_config.is_qat:
                raise NotImplementedError(
                    f"litert QAT: the graph has batch norm {bn}; litert-torch's conv-bn QAT annotation is "
                    "broken (see edgesr.quant.backends) and edgesr's shim does not annotate it"
                )
            model = super().annotate(model)
            qat = bool(self.global_config and self.global_config.is_qat)
            if self.fully_integer:
                annotate_float_islands(model, qat)
            return annotate_activations(model, self.activations, qat)

    return LiteRTQuantizer


def get_quantizer(
    backend: str, *, qat: bool = False, fully_integer: bool = False, activations: str = "int8"
) -> Any:
    """The torchao PT2E quantizer for `backend` (per-channel int8 weights, per-tensor int8 activations).

    `activations` (edgesr.quant.precision): `int8` everywhere, `float-ends` (input shift, head, global
    skip, last conv, output float), `int16-ends` / `int16` (16-bit activations there / everywhere:
    LiteRT only, TFLite's 16x8 kernels). `float-ends` and `fully_integer` exclude each other.

    For `litert` it is a litert-torch `PT2EQuantizer` (what `litert_torch.convert`'s
    `QuantConfig(pt2e_quantizer=...)` accepts). Raises `MissingSDKError` naming the pip extra when
    the backend's SDK is missing, ValueError for an unknown backend.
    """
    check_backend(backend)
    check_activations(backend, activations, fully_integer)
    require_torchao()
    from torchao.quantization.pt2e.quantizer import ComposableQuantizer

    from edgesr.quant.annotate import (  # need torchao (optional)
        ActivationsQuantizer,
        FloatIslandsQuantizer,
        W8A8Quantizer,
    )

    mod = _import_quantizer_sdk(backend)
    if backend == "litert":
        quantizer = litert_quantizer_class()(fully_integer=fully_integer, activations=activations)
        return quantizer.set_global(mod.get_symmetric_quantization_config(is_per_channel=True, is_qat=qat))
    if backend == "xnnpack":
        base = mod.XNNPACKQuantizer().set_global(
            mod.get_symmetric_quantization_config(is_per_channel=True, is_qat=qat)
        )
    else:
        base = W8A8Quantizer(qat=qat, weight_max=WEIGHT_MAX.get(backend, 127))
    quantizer = ComposableQuantizer([base, FloatIslandsQuantizer(qat)]) if fully_integer else base
    return quantizer if activations == "int8" else ActivationsQuantizer(quantizer, activations, qat)
