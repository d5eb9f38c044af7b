"""Read a saved Core ML ML program (`.mlpackage`) and check its structure, without running it.

Everything here reads the model protobuf (`coremltools.utils.load_spec`); weights stay in
`weights/weight.bin` and are not needed. Used by `CoremlExporter.validate` (verification on
machines where Core ML cannot run) and `CoremlExporter.delegation` (what goes into the manifest).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgesr.export.plan import ExportPlan

# MIL ops that produce a weight from stored int8/uint8 data when the program is loaded.
CONSTEXPR_OPS: frozenset[str] = frozenset(
    {"constexpr_affine_dequantize", "constexpr_blockwise_shift_scale", "constexpr_lut_to_dense"}
)
WEIGHTED_OPS: tuple[str, ...] = ("conv", "conv_transpose", "linear")
# MIL dtype name of weights and activations expected per precision.
FLOAT_DTYPE: dict[str, str] = {"fp32": "FLOAT32", "fp16": "FLOAT16", "int8": "FLOAT16"}
COMPUTE_UNITS = "decided at load time on device (CPU/GPU/ANE); not measurable on Linux"
# Documented in the coremltools guides ("Typed Execution", "Quantization: Performance").
PLACEMENT_NOTES: dict[str, str] = {
    "fp32": "float32 ML programs execute on the GPU and CPU only; the Neural Engine computes in float16",
    "w8a8": "activation quantization pays off only when the model runs (mostly) on the Neural Engine; "
    "A17 Pro / M4 and newer have faster int8-int8 compute there, while CPU and GPU dequantize at run time",
    "weight_only": "int8 weights are stored compressed and expanded to float16 for compute",
}


def read_spec(path: str | Path) -> Any:
    """The model protobuf (`CoreML.Specification.Model`) of an `.mlpackage` or `.mlmodel`."""
    import coremltools as ct

    return ct.utils.load_spec(str(path))


def main_block(spec: Any) -> Any:
    """The `main` function's block (its ops in order) for the function's opset."""
    fn = spec.mlProgram.functions["main"]
    return fn.block_specializations[fn.opset]


def _dtype(value_type: Any) -> str:
    from coremltools.proto import MIL_pb2

    return MIL_pb2.DataType.Name(value_type.tensorType.dataType)


def io_dtypes(spec: Any) -> tuple[str, str]:
    """('float16' | 'float32', ...) of the first input and first output multi-array."""
    from coremltools.proto import FeatureTypes_pb2

    name = FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name
    inp, out = spec.description.input[0], spec.description.output[0]
    return (name(inp.type.multiArrayType.dataType).lower(), name(out.type.multiArrayType.dataType).lower())


def op_histogram(block: Any) -> dict[str, int]:
    """{MIL op type: count} of the compute ops (consts left out), sorted by name."""
    return dict(sorted(Counter(op.type for op in block.operations if op.type != "const").items()))


def weight_storage(block: Any) -> dict[str, str]:
    """{op output name: how its weight is stored} for each conv/conv_transpose/linear op, e.g.
    'FLOAT16 const' or 'INT8 constexpr_affine_dequantize' (the dtype of the stored integer data)."""
    producer = {out.name: op for op in block.operations for out in op.outputs}
    storage: dict[str, str] = {}
    for op in block.operations:
        if op.type not in WEIGHTED_OPS:
            continue
        source = producer.get(op.inputs["weight"].arguments[0].name)
        if source is None:
            storage[op.outputs[0].name] = "computed at run time"
        elif source.type == "const":
            storage[op.outputs[0].name] = f"{_dtype(source.outputs[0].type)} const"
        elif source.type in CONSTEXPR_OPS:
            # iOS 16/17 constexpr ops hold their data as attributes, iOS 18 ones as const inputs
            data = [_dtype(v.type) for k, v in source.attributes.items() if k != "name"]
            data += [_dtype(producer[a.name].outputs[0].type) for arg in source.inputs.values()
                     for a in arg.arguments if a.name in producer]  # fmt: skip
            ints = sorted({d for d in data if "INT" in d and d != "INT32"})
            storage[op.outputs[0].name] = f"{'/'.join(ints) or '?'} {source.type}"
        else:
            storage[op.outputs[0].name] = f"computed by {source.type}"
    return storage


def _array(feature: Any) -> tuple[list[int], list[tuple[int, int]], str]:
    """(default shape, per-dim (lower, upper) ranges or [], dtype name) of a multi-array feature."""
    from coremltools.proto import FeatureTypes_pb2

    arr = feature.type.multiArrayType
    ranges = [(r.lowerBound, r.upperBound) for r in arr.shapeRange.sizeRanges]
    return list(arr.shape), ranges, FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(arr.dataType)


def _check_input(spec: Any, plan: ExportPlan, io_dtype: str) -> bool | str:
    feats = spec.description.input
    if [f.name for f in feats] != ["lr"]:
        return f"inputs {[f.name for f in feats]}, expected ['lr']"
    shape, ranges, dtype = _array(feats[0])
    want = list(plan.input_shape)
    if dtype != io_dtype.upper():
        return f"input dtype {dtype}, expected {io_dtype.upper()}"
    if shape != want:
        return f"input shape {shape}, expected {want}"
    if plan.dynamic:
        free = [r for r in ranges[2:] if r[0] < r[1]]
        if len(ranges) != 4 or len(free) != 2:
            return f"input H/W are not flexible (ranges {ranges})"
    elif any(lo != hi for lo, hi in ranges):
        return f"input has flexible dims {ranges} but the request is static"
    return True


def _check_output(
    spec: Any, block: Any, plan: ExportPlan, io_dtype: str
) -> tuple[bool | str, int | None]:
    """(check, scale): the output must be 'sr', (1, 3, s*H, s*W) with the same integer s >= 1."""
    feats = spec.description.output
    if [f.name for f in feats] != ["sr"]:
        return f"outputs {[f.name for f in feats]}, expected ['sr']", None
    shape, _, dtype = _array(feats[0])
    if dtype != io_dtype.upper():
        return f"output dtype {dtype}, expected {io_dtype.upper()}", None
    if plan.dynamic:  # the spec leaves the output shape open; read the rank from the program
        ttype = [o.type.tensorType for op in block.operations for o in op.outputs if o.name == "sr"]
        if not ttype:
            return "no program op produces the output 'sr'", None
        dims = [d.constant.size if d.HasField("constant") else None for d in ttype[0].dimensions]
        ok = len(dims) == 4 and dims[:2] == [1, 3]
        return (True if ok else f"program output dims {dims}, expected (1, 3, sH, sW)"), None
    _, _, h, w = plan.input_shape
    scales = {shape[2] / h, shape[3] / w} if len(shape) == 4 else set()
    if shape[:2] != [1, 3] or len(scales) != 1 or not float(next(iter(scales))).is_integer():
        return f"output shape {shape} is not (1, 3, s*{h}, s*{w}) for one integer scale s", None
    return True, shape[2] // h


def _image_convs(block: Any) -> set[str]:
    """Output names of the weighted ops that read the program input `lr` (through casts)."""
    producer = {out.name: op for op in block.operations for out in op.outputs}
    found = set()
    for op in block.operations:
        if op.type not in WEIGHTED_OPS:
            continue
        name = op.inputs["x"].arguments[0].name
        while name in producer and producer[name].type in ("cast", "identity"):
            name = producer[name].inputs["x"].arguments[0].name
        if name == "lr":
            found.add(op.outputs[0].name)
    return found


def _check_weights(storage: dict[str, str], plan: ExportPlan, block: Any) -> bool | str:
    if not storage:
        return "no conv/linear weights found"
    if plan.precision == "int8":
        # with float ends (edgesr.quant.precision.end_roles) every conv on the input and the last conv
        # not on it are float ops, weights too
        ends: set[str] = set()
        if plan.int8_activations and plan.activations == "float-ends":
            names = list(storage)  # in program order
            on_input = _image_convs(block) | {names[0]}
            rest = [n for n in names if n not in on_input]
            ends = on_input | set(rest[-1:])
        bad = {
            k: v
            for k, v in storage.items()
            if not v.startswith(("INT8", "UINT8")) and not (k in ends and v.startswith("FLOAT"))
        }
        return True if not bad else f"weights not stored as int8: {bad}"
    want = f"{FLOAT_DTYPE[plan.precision]} const"
    bad = {k: v for k, v in storage.items() if v != want}
    return True if not bad else f"weights not stored as {want}: {bad}"


def _check_activations(block: Any, plan: ExportPlan) -> bool | str:
    want = FLOAT_DTYPE[plan.precision]
    conv = [_dtype(op.outputs[0].type) for op in block.operations if op.type in WEIGHTED_OPS]
    if any(d != want for d in conv):
        return f"conv outputs {sorted(set(conv))}, expected {want}"
    n_quant = sum(op.type == "quantize" for op in block.operations)
    if plan.precision == "int8" and not plan.weight_only and n_quant == 0:
        return "W8A8 program has no activation quantize ops"
    if (plan.precision != "int8" or plan.weight_only) and n_quant:
        return f"{n_quant} activation quantize ops in a program without int8 activations"
    return True


def validate(
    path: str | Path, plan: ExportPlan, target: str, spec_version: int, io_dtype: str
) -> dict[str, Any]:
    """Structural checks of the `.mlpackage` at `path` against `request`, without running it.

    `target`/`spec_version`: the deployment target the exporter converts for (e.g. 'iOS17', 8);
    `io_dtype`: 'float16' or 'float32'. Returns {"checks": {name: True or why not}, "passed": bool,
    "ops": MIL op histogram, "scale": output/input size ratio, "weights": storage histogram}.
    """
    from google.protobuf.message import Error as ProtoError

    try:
        spec = read_spec(path)
    except (OSError, RuntimeError, ProtoError) as e:
        return {"checks": {"readable": f"cannot read the model spec: {e}"}, "passed": False, "ops": {}}
    checks: dict[str, bool | str] = {"readable": True}
    kind = spec.WhichOneof("Type")
    checks["model_type"] = True if kind == "mlProgram" else f"model type {kind!r}, expected 'mlProgram'"
    checks["deployment_target"] = (
        True
        if spec.specificationVersion == spec_version
        else f"specification version {spec.specificationVersion}, expected {spec_version} ({target})"
    )
    if kind != "mlProgram":
        return {"checks": checks, "passed": False, "ops": {}}
    block = main_block(spec)
    storage = weight_storage(block)
    checks["input"] = _check_input(spec, plan, io_dtype)
    checks["output"], scale = _check_output(spec, block, plan, io_dtype)
    checks["weights"] = _check_weights(storage, plan, block)
    checks["activations"] = _check_activations(block, plan)
    return {
        "checks": checks,
        "passed": all(v is True for v in checks.values()),
        "ops": op_histogram(block),
        "scale": scale,
        "weights": dict(sorted(Counter(storage.values()).items())),
        "deployment_target": target,
    }


def describe(path: str | Path) -> dict[str, Any]:
    """What the manifest's `delegation` records for a Core ML program: op histogram, weight storage,
    and placement notes from Apple's documentation; the actual compute units are chosen on device."""
    spec = read_spec(path)
    block = main_block(spec)
    ops = op_histogram(block)
    storage = Counter(weight_storage(block).values())
    notes = []
    if any(v.startswith("FLOAT32") for v in storage):
        notes.append(PLACEMENT_NOTES["fp32"])
    if ops.get("quantize"):
        notes.append(PLACEMENT_NOTES["w8a8"])
    elif any(v.startswith(("INT8", "UINT8")) for v in storage):
        notes.append(PLACEMENT_NOTES["weight_only"])
    return {
        "program": "mlProgram",
        "opset": spec.mlProgram.functions["main"].opset,
        "specification_version": spec.specificationVersion,
        "ops": ops,
        "nodes": sum(ops.values()),
        "weights": dict(sorted(storage.items())),
        "compute_units": COMPUTE_UNITS,
        "placement_notes": notes,
    }
