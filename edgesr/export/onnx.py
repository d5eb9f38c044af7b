"""ONNX target: `torch.onnx.export` (TorchScript front end, opset 17) run on ONNX Runtime's CPU EP.

fp32 only for now; fp16 and int8 ONNX graphs are not implemented yet and say so.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
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
        import torch
        from torch.onnx.errors import UnsupportedOperatorError

        self._sdk()
        axes = {INPUT: {2: "height", 3: "width"}, OUTPUT: {2: "out_height", 3: "out_width"}}
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
                )
        except UnsupportedOperatorError as e:
            m = re.search(r"operator '([^']+)'", str(e))
            raise UnsupportedOpError(self.spec.name, m.group(1) if m else "unknown", str(e)) from e

    def load(self, path: Path, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
        _, ort = self._sdk()
        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
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

        The histogram is of the file; ORT's graph optimizations fuse some nodes at load time.
        """
        onnx, _ = self._sdk()
        proto = onnx.load(str(path))
        ops = dict(sorted(Counter(n.op_type for n in proto.graph.node).items()))
        n = sum(ops.values())
        opset = max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
        return {
            "opset": opset,
            "nodes": n,
            "ops": ops,
            "providers": {PROVIDERS[0]: {"nodes": n, "ops": ops}},
            "delegated_fraction": 1.0,
        }


EXPORTERS.register(OnnxExporter.spec.name)(OnnxExporter())
