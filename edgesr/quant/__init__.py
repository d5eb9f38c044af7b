"""INT8 for phones: PT2E post-training quantization and quantization-aware training (QAT).

The API the exporters call for `--precision int8` (docs/quantization.md has the recipes):

    from edgesr import quant
    backend = quant.TARGET_BACKEND["executorch"]                 # "xnnpack"
    if quant.is_qat_checkpoint(ckpt):
        int8, qmeta = quant.load_quantized(ckpt, example=x)      # the QAT-trained graph, converted
    else:
        int8 = quant.ptq(student, backend, x, quant.calibration_images(scale=2))

`int8` is a torch.fx GraphModule of quantize/dequantize + float ops that each SDK lowers to its
integer kernels. Importing this package imports no export SDK and not torchao: both are imported
by the functions that need them (`MissingSDKError` names the pip extra when one is missing).
"""

from edgesr.quant import stage as _stage  # noqa: F401  (registers the `qat` training mode)
from edgesr.quant.backends import BACKENDS, TARGET_BACKEND, check_backend, get_quantizer
from edgesr.quant.pt2e import (
    activation_fake_quants,
    calibrate,
    calibrate_ranges,
    calibration_images,
    convert,
    export_graph,
    prepare,
    ptq,
    set_training,
)
from edgesr.quant.state import (
    QAT_EXAMPLE,
    QuantMeta,
    fake_quant_model,
    float_reference,
    is_qat_checkpoint,
    load_quantized,
    quantized_student,
)

__all__ = [
    "BACKENDS",
    "QAT_EXAMPLE",
    "TARGET_BACKEND",
    "QuantMeta",
    "activation_fake_quants",
    "calibrate",
    "calibrate_ranges",
    "calibration_images",
    "check_backend",
    "convert",
    "export_graph",
    "fake_quant_model",
    "float_reference",
    "get_quantizer",
    "is_qat_checkpoint",
    "load_quantized",
    "prepare",
    "ptq",
    "quantized_student",
    "set_training",
]
