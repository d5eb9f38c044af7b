"""What each export target is, in one place: `TARGETS`, one `TargetSpec` per target.

Everything that needs a fact about a target reads it here: the exporters (`edgesr.export`), the
quantization backends (`edgesr.quant.backends`), recipe validation (`train.quant.backend`), device
files (which runtime runs a target's artifact), the host profiler (runtime package, delegate) and the
CLI's `choices`. The module imports nothing but the registry and edgesr.errors, so training machines
and the recipe schema can read it without any export SDK.

Adding a target: declare its `TargetSpec` here, write its exporter (edgesr/export/<name>.py, which
binds `spec = TARGETS.get(name)`) and its tests; a test checks that every spec has an exporter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from edgesr.errors import UsageError
from edgesr.registry import Registry

__all__ = [
    "ACTIVATIONS",
    "ESTIMATORS",
    "PRECISIONS",
    "TARGETS",
    "UPSAMPLERS",
    "RuntimeOption",
    "TargetSpec",
    "parse_runtime_options",
    "quant_backends",
    "target_of_backend",
]

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
# int8 modes (edgesr.quant): which activations stay int8 (edgesr.quant.precision has the table) and
# how an activation's int8 range is estimated from calibration images (edgesr.quant.pt2e.prepare).
ACTIVATIONS: tuple[str, ...] = ("int8", "float-ends", "int16-ends", "int16")
ESTIMATORS: tuple[str, ...] = ("histogram", "minmax")
# How the last stage's sub-pixel upsampling is written in the exported graph (edgesr/export/graphs.py):
# nn.PixelShuffle, a depth-to-space with reordered conv channels, or a fixed-weight ConvTranspose2d.
UPSAMPLERS: tuple[str, ...] = ("pixelshuffle", "depth_to_space", "transposed_conv")


@dataclass(frozen=True)
class RuntimeOption:
    """A setting of the runtime that opens a target's artifacts, not part of the artifact: the app
    sets it when it creates its session. Profiles time its values; the manifest records the one the
    artifact is meant to run with (numerics do not depend on it: verification uses the defaults)."""

    name: str  # e.g. "spinning"
    values: tuple[str, ...]  # the first is the runtime's own default
    help: str

    @property
    def default(self) -> str:
        return self.values[0]


@dataclass(frozen=True)
class TargetSpec:
    """The facts about one export target that code outside its exporter needs."""

    name: str  # registry name and `--target` value, e.g. "tflite"
    suffix: str  # artifact file suffix, e.g. ".tflite"
    sdk_label: str  # how messages name the SDK, e.g. "LiteRT (litert-torch + ai-edge-litert)"
    extra: str  # pip extra that installs the SDK: pip install "edgesr[<extra>]"
    runtime: str  # the runtime name device files and profiles use for its artifacts, e.g. "litert"
    runtime_package: str  # the package whose version is "the runtime version" in a profile
    runtime_label: str  # what runs the artifact here, as manifests say it
    precisions: tuple[str, ...]
    default_precision: str = "fp32"  # what `edgesr export` uses when --precision is not given
    upsamplers: tuple[str, ...] = UPSAMPLERS  # variants the converter takes
    default_upsampler: str = "pixelshuffle"  # int8 or dynamic shapes (and float, unless below)
    float_fixed_upsampler: str | None = None  # float at a fixed input shape, when it differs
    int8_upsampler: str | None = None  # int8 compute (fixed shape), when it differs
    delegates: tuple[str, ...] = ()  # backends inside the artifact `--delegate` picks (first = default)
    host_delegate: str = "cpu"  # the delegate a host profile records when the target has no choice
    quant_backend: str | None = None  # the PT2E quantizer backend of its int8 path (edgesr.quant)
    # int8 with the image-facing ends left float (edgesr.quant.precision `float-ends`) converts and
    # verifies: measured for ExecuTorch (60.1 dB vs its q/dq graph) and TFLite (59.9 dB); Core ML
    # converts (2 fp16 convs, 10 int8 ones) and passes its structural checks (numerics need macOS)
    float_ends: bool = True
    dynamic_shapes: bool = False  # free H and W at run time
    # int8 with int8 activations and free H/W: False where the converter bakes the traced example
    # size into the quantized graph (checked by plan_export before any calibration)
    dynamic_int8: bool = True
    fully_integer: bool = False  # int8 I/O and no float op (NPU targets)
    weight_only: bool = False  # int8 weights, float activations
    platforms: tuple[str, ...] = ()  # sys.platform values whose runtime runs the artifact; () = any
    io: str = "float32 NCHW in [0, 1]"  # artifact I/O unless the exporter's io_spec says otherwise
    runtime_options: tuple[RuntimeOption, ...] = ()  # runtime settings profiles can time

    def runtime_option(self, name: str) -> RuntimeOption:
        """The option called `name`; UsageError naming the ones this target has."""
        for o in self.runtime_options:
            if o.name == name:
                return o
        have = ", ".join(f"{o.name}={'|'.join(o.values)}" for o in self.runtime_options)
        raise UsageError(
            f"{self.name} has no runtime option {name!r} ({'it has ' + have if have else 'it has none'})"
        )

    def check_runtime_options(self, options: Mapping[str, str]) -> dict[str, str]:
        """`options` as a plain dict, each name and value checked (UsageError names what is valid)."""
        for name, value in options.items():
            o = self.runtime_option(name)
            if value not in o.values:
                raise UsageError(
                    f"{self.name} runtime option {name}={value!r}: expected one of {', '.join(o.values)}"
                )
        return dict(sorted(options.items()))

    def non_default_options(self, options: Mapping[str, str]) -> dict[str, str]:
        """The options that differ from the runtime's defaults (what a deployment must set)."""
        return {k: v for k, v in sorted(options.items()) if v != self.runtime_option(k).default}

    def upsampler(self, precision: str, dynamic: bool, weight_only: bool = False) -> str:
        """The upsampler variant used when the request names none (int8 weight-only computes in float)."""
        int8_compute = precision == "int8" and not weight_only
        if self.int8_upsampler is not None and int8_compute and not dynamic:
            return self.int8_upsampler
        if self.float_fixed_upsampler is not None and not int8_compute and not dynamic:
            return self.float_fixed_upsampler
        return self.default_upsampler

    @property
    def default_delegate(self) -> str:
        return self.delegates[0] if self.delegates else self.host_delegate


TARGETS: Registry[TargetSpec] = Registry("target")


def _declare(spec: TargetSpec) -> TargetSpec:
    return TARGETS.register(spec.name)(spec)


_declare(TargetSpec(
    name="onnx", suffix=".onnx", sdk_label="ONNX", extra="onnx",
    runtime="onnxruntime", runtime_package="onnxruntime",
    runtime_label="onnxruntime CPUExecutionProvider",
    # int8: a QDQ model of edgesr's PT2E graph (S8S8, per-channel weights), fixed input shape
    precisions=("fp32", "int8"), dynamic_shapes=True, dynamic_int8=False, host_delegate="cpu",
    quant_backend="onnxruntime",
    # ORT's worker threads spin while they wait, by default; on a host that runs other work that
    # spinning takes CPU from it (docs/export.md measures it). Timed by `profile --runtime-option`.
    # Values are not on/off: YAML reads those as booleans.
    runtime_options=(RuntimeOption(
        "spinning", ("allowed", "disabled"),
        "ONNX Runtime thread spinning (session.intra_op.allow_spinning / inter_op): disabled gives "
        "the CPU back while threads wait, for hosts shared with other work",
    ),),
))  # fmt: skip
_declare(TargetSpec(
    name="tflite", suffix=".tflite", sdk_label="LiteRT (litert-torch + ai-edge-litert)", extra="tflite",
    runtime="litert", runtime_package="ai-edge-litert",
    runtime_label="ai-edge-litert Interpreter (default XNNPACK delegate)",
    precisions=("fp32", "fp16", "int8"),
    # Float at a fixed shape: a real DEPTH_TO_SPACE op (about 30% faster than TRANSPOSE_CONV on the host's
    # XNNPACK, and what mobile GPU delegates take). int8: the PixelShuffle graph (int8 RESHAPE/TRANSPOSE),
    # faster than TRANSPOSE_CONV on both machine kinds measured, with float ends 18.8 vs 30.5 ms (AVX-512
    # /VNNI Zen 5) and 91.6 vs 113.7 ms (AVX2 Zen 3; docs/export.md, default variants), and it needs no
    # rewrite, so every model takes it. Dynamic shapes: TRANSPOSE_CONV, the one form litert-torch
    # converts with free H/W.
    default_upsampler="transposed_conv", float_fixed_upsampler="depth_to_space",
    int8_upsampler="pixelshuffle", host_delegate="xnnpack", quant_backend="litert",
    dynamic_shapes=True,  # with upsampler "transposed_conv" and some models (edgesr/export/tflite.py)
    dynamic_int8=False,
    fully_integer=True, weight_only=True,
))  # fmt: skip
_declare(TargetSpec(
    name="executorch", suffix=".pte", sdk_label="ExecuTorch", extra="executorch",
    runtime="executorch", runtime_package="executorch",
    runtime_label="ExecuTorch runtime (portable kernels + XNNPACK delegate)",
    precisions=("fp32", "fp16", "int8"), delegates=("xnnpack", "coreml"), quant_backend="xnnpack",
    dynamic_shapes=True,
))  # fmt: skip
_declare(TargetSpec(
    name="coreml", suffix=".mlpackage", sdk_label="Core ML (coremltools)", extra="coreml",
    runtime="coreml", runtime_package="coremltools",
    runtime_label="Core ML (MLModel.predict, ML program, iOS17+)",
    precisions=("fp32", "fp16", "int8"), default_precision="fp16",
    # pixelshuffle -> one MIL pixel_shuffle op per stage; depth_to_space -> reshape/transpose (rank 5);
    # transposed_conv -> conv_transpose. All three convert; the single native op is the default.
    host_delegate="all", quant_backend="coreml", dynamic_shapes=True, weight_only=True,
    platforms=("darwin",),
))  # fmt: skip


def quant_backends() -> tuple[str, ...]:
    """Every int8 quantization backend a target uses (`train.quant.backend` values)."""
    return tuple(s.quant_backend for s in TARGETS.values() if s.quant_backend is not None)


def target_of_runtime(runtime: str) -> str:
    """The `--target` whose artifacts `runtime` runs (profiles name runtimes); "pytorch" for eager.
    KeyError for a runtime no target uses."""
    if runtime == "pytorch":
        return "pytorch"
    for spec in TARGETS.values():
        if spec.runtime == runtime:
            return spec.name
    raise KeyError(runtime)


def parse_runtime_options(target: str, pairs: Iterable[str]) -> list[dict[str, str]]:
    """`--runtime-option` values for `target`, e.g. ["spinning=allowed,disabled"] ->
    [{"spinning": "allowed"}, {"spinning": "disabled"}]: every combination of the listed values
    ([{}] for none); UsageError names the target's options when a name or value is not one of them."""
    combos: list[dict[str, str]] = [{}]
    spec = TARGETS.get(target) if target in TARGETS.names() else None
    for pair in pairs:
        name, sep, values = pair.partition("=")
        if not sep or not name or not values:
            raise UsageError(
                f"--runtime-option {pair!r}: expected NAME=VALUE[,VALUE...], e.g. spinning=disabled"
            )
        if spec is None:
            raise UsageError(f"--runtime-option {pair!r}: {target} has no runtime options")
        option = spec.runtime_option(name)
        if any(name in c for c in combos):
            raise UsageError(f"--runtime-option {name} is given twice: list its values once, e.g. {name}=a,b")
        chosen = option.values if values == "all" else tuple(dict.fromkeys(values.split(",")))
        for v in chosen:
            spec.check_runtime_options({name: v})
        combos = [{**c, name: v} for c in combos for v in chosen]
    return combos


def target_of_backend(backend: str) -> TargetSpec:
    """The target whose int8 path uses `backend` (KeyError for an unknown backend)."""
    for spec in TARGETS.values():
        if spec.quant_backend == backend:
            return spec
    raise KeyError(backend)
