"""Export students to on-device formats, verify each artifact on its real runtime, describe it.

>>> from edgesr.export import ExportRequest, export_checkpoint
>>> r = export_checkpoint(ExportRequest("runs/quickstart/student", target="onnx"))
>>> r.artifact, r.verification.psnr_db  # doctest: +SKIP

What a target is lives in `edgesr.targets`; each exporter (one file per target) registers in
`EXPORTERS`; importing this package imports no export SDK.
"""

from edgesr.export import coreml as _coreml  # noqa: F401  (registers the "coreml" target)
from edgesr.export import executorch as _executorch  # noqa: F401  (registers the "executorch" target)
from edgesr.export import onnx as _onnx  # noqa: F401  (registers the "onnx" target)
from edgesr.export import tflite as _tflite  # noqa: F401  (registers the "tflite" target)
from edgesr.export.base import EXPORTERS, Exporter, UnsupportedOpError, VerificationError, get_exporter
from edgesr.export.manifest import manifest_path, read_manifest
from edgesr.export.plan import (
    ExportOptions,
    ExportPlan,
    ExportRequest,
    UnsupportedOptionError,
    parse_input_shape,
    plan_export,
)
from edgesr.export.run import ExportReport, ExportResult, export_all, export_checkpoint, export_student
from edgesr.export.verify import FLOAT_PSNR_DB, Verification
from edgesr.sdk import MissingSDKError
from edgesr.targets import PRECISIONS, TARGETS, UPSAMPLERS

__all__ = [
    "EXPORTERS",
    "FLOAT_PSNR_DB",
    "PRECISIONS",
    "TARGETS",
    "UPSAMPLERS",
    "ExportOptions",
    "ExportPlan",
    "ExportReport",
    "ExportRequest",
    "ExportResult",
    "Exporter",
    "MissingSDKError",
    "UnsupportedOpError",
    "UnsupportedOptionError",
    "Verification",
    "VerificationError",
    "export_all",
    "export_checkpoint",
    "export_student",
    "get_exporter",
    "manifest_path",
    "parse_input_shape",
    "plan_export",
    "read_manifest",
]
