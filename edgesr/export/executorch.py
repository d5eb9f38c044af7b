"""ExecuTorch target: `torch.export` -> `to_edge_transform_and_lower` -> `.pte`, run on the ExecuTorch
Python runtime (pybindings `portable_lib`: portable kernels + the XNNPACK delegate).

Delegates (`plan.delegate`): "xnnpack" (default) and "coreml". A Core ML `.pte` lowers on Linux but
its backend is registered only in Apple builds of the runtime, so there `runs_here(path)` gives the
reason and verification is structural (`validate`).

Precisions, XNNPACK delegate:
- fp32.
- fp16: the model is cast to half precision, I/O included (float32<->float16 casts inside the graph
  are not delegated: they would split it). XNNPACK lowers it fully, the host runtime runs it (about
  80 dB vs float32 PyTorch on a small EDSR); `load` casts float32 input to float16 and back.
  A scalar multiply (EDSR's `res_scale`, even 1.0) leaves a 0-d dtype cast outside XNNPACK per use.
  Faster than fp32 here, not slower: on the AVX2 (F16C) Zen 3 build machine fp16 took 0.77x / 0.69x
  of fp32's CPU time at 16 / 64 channels (docs/export.md, "ExecuTorch fp16"), because this
  executorch build's fp32 conv kernel is the slow one (under half the fp32 peak LiteRT reaches there).
- int8: the converted PT2E graph (XNNPACKQuantizer q/dq ops, from `edgesr.quant`) is lowered to
  XNNPACK's integer kernels.
Core ML delegate: fp32 and fp16 set Core ML's compute precision; int8 raises (the q/dq graph is made
for XNNPACK; export to the "coreml" target for Core ML int8).

Upsamplers: all three variants lower fully to XNNPACK; their latencies differ by less than the noise
of a shared 2-core host, so the default stays "pixelshuffle".

Dynamic shapes: H and W are `torch.export.Dim`s in [DYNAMIC_MIN, DYNAMIC_MAX] LR pixels. ExecuTorch
plans memory for the upper bound (the manifest's `input.planned_shape`).

Threads: XNNPACK's thread pool is process-wide; `load(path, threads)` resizes it (an experimental
pybindings call); its default is the number of CPU cores.
"""

from __future__ import annotations

import copy
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from edgesr.export.base import EXPORTERS, ImageOnly, UnsupportedOpError, VerificationError
from edgesr.export.plan import ExportPlan, UnsupportedOptionError
from edgesr.sdk import import_sdk
from edgesr.targets import TARGETS

SPEC = TARGETS.get("executorch")

METHOD = "forward"
BACKEND_IDS: dict[str, str] = {"xnnpack": "XnnpackBackend", "coreml": "CoreMLBackend"}
DYNAMIC_MIN, DYNAMIC_MAX = 2, 1024  # bounds of dynamic H and W, LR pixels
_DTYPES: dict[int, type] = {6: np.float32, 5: np.float16}  # ExecuTorch ScalarType -> numpy (I/O we make)
COREML_NOT_HERE = (
    "the ExecuTorch runtime here has no CoreMLBackend (it is built only for Apple devices); "
    "run the .pte on iOS/macOS"
)


class ExecutorchExporter:
    spec = SPEC

    def _sdk(self) -> Any:
        # the top-level package first: a cached `executorch.exir` would hide a blocked `executorch`
        _, exir = import_sdk(SPEC.name, SPEC.sdk_label, SPEC.extra, "executorch", "executorch.exir")
        return exir

    def sdk_versions(self) -> dict[str, str]:
        self._sdk()
        from executorch.version import __version__

        return {"executorch": __version__}

    def _partitioner(self, plan: ExportPlan) -> Any:
        if plan.delegate == "xnnpack":
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

            return XnnpackPartitioner()
        if plan.precision == "int8":
            raise UnsupportedOptionError(
                "int8 with the Core ML delegate is not supported: the int8 graph is quantized for "
                "XNNPACK; export to target 'coreml' for a Core ML int8 model"
            )
        partition, compiler, ct = import_sdk(
            SPEC.name, "ExecuTorch Core ML delegate", "executorch,coreml",
            "executorch.backends.apple.coreml.partition", "executorch.backends.apple.coreml.compiler",
            "coremltools",
        )  # fmt: skip
        precision = ct.precision.FLOAT16 if plan.precision == "fp16" else ct.precision.FLOAT32
        specs = compiler.CoreMLBackend.generate_compile_specs(
            minimum_deployment_target=ct.target.iOS17, compute_precision=precision
        )
        return partition.CoreMLPartitioner(compile_specs=specs)

    def export(self, model: nn.Module, example: Tensor, path: Path, plan: ExportPlan) -> None:
        """Lower `model` (eval mode, or the converted PT2E graph for int8) and write the `.pte` at `path`.

        Raises UnsupportedOpError naming the op when it is outside the Core ATen opset ExecuTorch takes,
        or when it is left to a kernel the ExecuTorch runtime does not have.
        """
        import torch
        from torch._export.verifier import SpecViolationError

        exir = self._sdk()
        partitioner = self._partitioner(plan)
        xnnpack_half = plan.precision == "fp16" and plan.delegate == "xnnpack"
        module = ImageOnly(copy.deepcopy(model).half() if xnnpack_half else model)
        # fresh strides: a size-1 dim may carry stride 0 (numpy padding does that), which ExecuTorch rejects
        example = example.clone(memory_format=torch.contiguous_format)
        example = example.half() if xnnpack_half else example
        dynamic = None
        if plan.dynamic:
            h = torch.export.Dim("height", min=DYNAMIC_MIN, max=DYNAMIC_MAX)
            w = torch.export.Dim("width", min=DYNAMIC_MIN, max=DYNAMIC_MAX)
            dynamic = {"x": {2: h, 3: w}}
        try:
            ep = torch.export.export(module, (example,), dynamic_shapes=dynamic)
            edge = exir.to_edge_transform_and_lower(ep, partitioner=[partitioner])
            program = edge.to_executorch()
        except SpecViolationError as e:
            m = re.search(r"Operator torch\._ops\.(\S+) is not in Core ATen", str(e))
            op = m.group(1) if m else "unknown"
            raise UnsupportedOpError(
                SPEC.name, op, "it is not in the Core ATen opset ExecuTorch lowers"
            ) from e
        missing = sorted(set(_kernel_calls(_program(program.buffer))) - _registered_kernels())
        if missing:
            detail = "no delegate takes it and the ExecuTorch runtime has no kernel for it"
            raise UnsupportedOpError(SPEC.name, missing[0], f"{detail} (all such ops: {', '.join(missing)})")
        path.write_bytes(program.buffer)

    def runs_here(self, path: Path | None = None) -> str | None:
        """None, or why the `.pte` at `path` cannot run here (a delegate this runtime lacks: Core ML)."""
        if path is None:
            return None
        missing = _backends(_read(path)) - _registered_backends()
        if not missing:
            return None
        if missing == {BACKEND_IDS["coreml"]}:
            return COREML_NOT_HERE
        return f"the ExecuTorch runtime here has no {', '.join(sorted(missing))}"

    def load(
        self, path: Path, threads: int | None = None, options: Mapping[str, str] | None = None
    ) -> Callable[[np.ndarray], np.ndarray]:
        """Load `forward` of the `.pte`; `threads` resizes the process-wide XNNPACK thread pool."""
        self.spec.check_runtime_options(options or {})  # none: refuses any
        import torch

        self._sdk()
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime

        reason = self.runs_here(path)
        if reason is not None:
            raise RuntimeError(f"{path}: cannot run here: {reason}")
        if threads is not None:
            portable_lib._unsafe_reset_threadpool(int(threads))
        try:
            method = Runtime.get().load_program(Path(path)).load_method(METHOD)
        except RuntimeError as e:  # the runtime refuses the program: a property of this graph variant
            raise VerificationError(
                f"{Path(path).name}: the ExecuTorch runtime cannot load it ({e}); nothing was written. This "
                "graph form does not run on this runtime build: export another --upsampler or "
                "--activations (edgesr export --tune tries them all)"
            ) from None
        dtype = _DTYPES[method.metadata.input_tensor_meta(0).dtype()]

        def run(x: np.ndarray) -> np.ndarray:
            t = torch.from_numpy(np.asarray(x, dtype=dtype)).clone(memory_format=torch.contiguous_format)
            out = method.execute([t])[0]
            return out.numpy().astype(np.float32)  # a copy: the output lives in planned memory

        return run

    def run(self, path: Path, x: np.ndarray) -> np.ndarray:
        return self.load(path)(x)

    def delegation(self, path: Path) -> dict[str, Any]:
        """What runs where, read from the `.pte` itself.

        `ops`: every op, delegated ones under the backend's own names (XNNPACK nodes, e.g. XNNConv2d)
        and the rest as ExecuTorch kernels (e.g. aten::cat.out). `partitions`: delegate calls; more
        than one, or any `non_delegated` op, means a split graph. `calls`: the execution order.
        `delegated_fraction`: delegated ops / all ops (None when a delegate's payload cannot be read
        here, as for Core ML, and some ops are not delegated).
        """
        self._sdk()
        program = _read(path)
        plan = _plan(program)
        calls: list[str] = []
        partitions: Counter[str] = Counter()
        inside: dict[str, Counter[str] | None] = {}  # backend -> its ops (None: payload not readable)
        for kind, value in _calls(plan):
            if kind == "kernel":
                calls.append(value)
                continue
            d = plan.delegates[value]
            calls.append(d.id)
            partitions[d.id] += 1
            ops = _xnnpack_ops(_delegate_blob(program, d)) if d.id == BACKEND_IDS["xnnpack"] else None
            before = inside.get(d.id, Counter())
            inside[d.id] = None if ops is None or before is None else before + ops
        kernels = Counter(c for c in calls if c not in partitions)
        known = all(o is not None for o in inside.values())
        n_delegated = sum(sum(o.values()) for o in inside.values() if o is not None)
        n_kernels = sum(kernels.values())
        if not kernels:
            fraction: float | None = 1.0 if partitions else 0.0
        else:
            fraction = n_delegated / (n_delegated + n_kernels) if known else None
        ops = Counter(kernels)
        for o in inside.values():
            ops.update(o or {})
        return {
            "method": METHOD,
            "ops": dict(sorted(ops.items())),
            "backends": {
                b: {"partitions": partitions[b], "ops": None if o is None else dict(sorted(o.items()))}
                for b, o in inside.items()
            },
            "partitions": sum(partitions.values()),
            "delegated_ops": n_delegated if known else None,
            "non_delegated": dict(sorted(kernels.items())),
            "delegated_fraction": None if fraction is None else round(fraction, 4),
            "calls": calls,
        }

    def validate(self, path: Path, plan: ExportPlan) -> dict[str, Any]:
        """Structural checks of a `.pte` that may not run here: it loads, has `forward`, its delegate
        blobs are present and for the requested delegate, its kernels exist, its I/O shapes are right."""
        self._sdk()
        from executorch.runtime import Runtime

        program = _read(path)
        execution = _plan(program)
        want = BACKEND_IDS[plan.delegate]
        loaded = Runtime.get().load_program(Path(path))
        meta = loaded.metadata(METHOD)
        ins = [list(meta.input_tensor_meta(i).sizes()) for i in range(meta.num_inputs())]
        outs = [list(meta.output_tensor_meta(i).sizes()) for i in range(meta.num_outputs())]
        n, c, h, w = plan.input_shape
        # dynamic: memory is planned for the largest input, which must hold the requested one
        fits = len(ins) == 1 and len(ins[0]) == 4 and ins[0][2] >= h and ins[0][3] >= w
        in_ok = fits and (ins[0][:2] == [n, c] if plan.dynamic else ins[0] == [n, c, h, w])
        out_ok = len(outs) == 1 and len(ins) == 1 and outs[0][:2] == [n, c] and _same_scale(ins[0], outs[0])
        checks = {
            "loads": True,
            "forward_method": METHOD in loaded.method_names,
            "delegate_blobs": bool(execution.delegates)
            and all(d.id == want and len(_delegate_blob(program, d)) > 0 for d in execution.delegates),
            "kernels_registered": set(_kernel_calls(program)) <= _registered_kernels(),
            "input_shape": in_ok,
            "output_shape": out_ok,
        }
        return {"checks": checks, "passed": all(checks.values()), "input": ins, "output": outs}

    def evaluator(self) -> None:
        return None  # a .pte that cannot run here (Core ML delegate) is checked structurally only

    def io_spec(self, path: Path) -> dict[str, Any]:
        """The memory-planned I/O shapes (for dynamic shapes: the largest the `.pte` accepts)."""
        from executorch.runtime import Runtime

        meta = Runtime.get().load_program(Path(path)).metadata(METHOD)
        spec = {}
        for key, t in (("input", meta.input_tensor_meta(0)), ("output", meta.output_tensor_meta(0))):
            spec[key] = {"planned_shape": list(t.sizes()), "dtype": np.dtype(_DTYPES[t.dtype()]).name}
        return spec


def _same_scale(inp: list[int], out: list[int]) -> bool:
    return len(inp) == len(out) == 4 and out[2] % inp[2] == 0 and out[2] // inp[2] * inp[3] == out[3]


def _program(data: bytes) -> Any:
    """The deserialized `executorch.exir.schema.Program` of `.pte` bytes, delegate payloads restored."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    return deserialize_pte_binary(bytes(data)).program


def _read(path: Path) -> Any:
    return _program(Path(path).read_bytes())


def _plan(program: Any) -> Any:
    plans = [p for p in program.execution_plan if p.name == METHOD]
    if not plans:
        names = [p.name for p in program.execution_plan]
        raise ValueError(f"the .pte has no {METHOD!r} method (methods: {names})")
    return plans[0]


def _calls(plan: Any) -> list[tuple[str, Any]]:
    """("kernel", "aten::cat.out") or ("delegate", index into plan.delegates), in execution order."""
    from executorch.exir.schema import DelegateCall, KernelCall

    out: list[tuple[str, Any]] = []
    for chain in plan.chains:
        for ins in chain.instructions:
            a = ins.instr_args
            if isinstance(a, KernelCall):
                op = plan.operators[a.op_index]
                out.append(("kernel", f"{op.name}.{op.overload}" if op.overload else op.name))
            elif isinstance(a, DelegateCall):
                out.append(("delegate", a.delegate_index))
    return out


def _kernel_calls(program: Any) -> list[str]:
    return [v for k, v in _calls(_plan(program)) if k == "kernel"]


def _backends(program: Any) -> set[str]:
    return {d.id for d in _plan(program).delegates}


def _registered_backends() -> set[str]:
    from executorch.runtime import Runtime

    return set(Runtime.get().backend_registry.registered_backend_names)


def _registered_kernels() -> set[str]:
    from executorch.runtime import Runtime

    return set(Runtime.get().operator_registry.operator_names)


def _delegate_blob(program: Any, delegate: Any) -> bytes:
    from executorch.exir.schema import DataLocation

    if delegate.processed.location != DataLocation.INLINE:
        raise ValueError(f"{delegate.id}: delegate payload stored outside the .pte is not supported")
    return bytes(program.backend_delegate_data[delegate.processed.index].data)


def _xnnpack_ops(blob: bytes) -> Counter[str]:
    """Histogram of the XNNPACK graph's nodes (XNNConv2d, XNNAdd, XNNConvert, ...): its header locates
    a flatbuffer, which the flatc bundled with ExecuTorch turns into JSON with the XNNPACK schema."""
    import importlib.resources

    from executorch.backends.xnnpack.serialization.xnnpack_graph_serialize import XNNHeader
    from executorch.exir._serialize._flatbuffer import _flatc_decompile

    header = XNNHeader.from_bytes(blob[: XNNHeader.EXPECTED_LENGTH])
    if not header.is_valid():
        raise ValueError("XNNPACK delegate payload has no valid XNNPACK header")
    graph = blob[header.flatbuffer_offset : header.flatbuffer_offset + header.flatbuffer_size]
    schema = importlib.resources.files("executorch.backends.xnnpack.serialization").joinpath("schema.fbs")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "schema.fbs").write_bytes(schema.read_bytes())
        (Path(tmp) / "graph.bin").write_bytes(graph)
        _flatc_decompile(tmp, str(Path(tmp) / "schema.fbs"), str(Path(tmp) / "graph.bin"))
        text = (Path(tmp) / "graph.json").read_text()
    # a regex, not json.loads: flatc writes non-finite clamp bounds as bare inf
    return Counter(re.findall(r'"xnode_union_type":\s*"(\w+)"', text))


EXPORTERS.register(SPEC.name)(ExecutorchExporter())
