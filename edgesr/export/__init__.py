"""Export students to on-device formats, verify each artifact on its real runtime, describe it.

>>> from edgesr.export import ExportRequest, export_checkpoint
>>> r = export_checkpoint(ExportRequest("runs/quickstart/student", target="onnx"))
>>> r.artifact, r.verification.psnr_db  # doctest: +SKIP

Targets register in `EXPORTERS`; importing this package imports no export SDK.
"""

from edgesr.export import coreml as _coreml  # noqa: F401  (registers the "coreml" target)
from edgesr.export import executorch as _executorch  # noqa: F401  (registers the "executorch" target)
from edgesr.export import onnx as _onnx  # noqa: F401  (registers the "onnx" target)
from edgesr.export import tflite as _tflite  # noqa: F401  (registers the "tflite" target)
from edgesr.export.base import (
    EXPORTERS,
    PRECISIONS,
    Exporter,
    ExportReport,
    ExportRequest,
    ExportResult,
    MissingSDKError,
    UnsupportedOpError,
    UnsupportedOptionError,
    VerificationError,
    export_all,
    export_checkpoint,
    get_exporter,
    parse_input_shape,
)
from edgesr.export.manifest import manifest_path, read_manifest
from edgesr.export.verify import FLOAT_PSNR_DB, Verification

__all__ = [
    "EXPORTERS",
    "FLOAT_PSNR_DB",
    "PRECISIONS",
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
    "get_exporter",
    "manifest_path",
    "parse_input_shape",
    "read_manifest",
]
