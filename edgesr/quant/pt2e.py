"""The PT2E quantization steps: export -> prepare (observers or fake quant) -> calibrate -> convert.

    q = prepare(student, "xnnpack", example)             # PTQ: observers
    calibrate(q, calibration_images(scale=2))            # built-in *train* crops, never val
    int8 = convert(q, "xnnpack")                         # q/dq graph the backend lowers
    int8 = ptq(student, "xnnpack", example)              # the same in one call

    fq = prepare(student, "xnnpack", example, qat=True)  # QAT: fake quant, trainable, batch/H/W free
    calibrate_ranges(fq, calibration_images(scale=2))    # QAT starts from PTQ's activation ranges

Everything here runs on CPU torch + torchao; only `get_quantizer` imports a backend SDK.
"""

from __future__ import annotations

import copy
import types
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.fx import GraphModule

from edgesr.data import load_lr, open_dataset, to_tensor
from edgesr.errors import DataError, UsageError
from edgesr.models import reparameterize
from edgesr.quant.backends import check_backend, get_quantizer, require_torchao
from edgesr.targets import ESTIMATORS

CALIBRATION_SOURCE = "builtin:train"  # PTQ / QAT range calibration photos unless told otherwise

__all__ = [
    "CALIBRATION_SOURCE", "ESTIMATORS", "activation_fake_quants", "calibrate", "calibrate_ranges",
    "calibration_images", "convert", "estimator_class", "export_graph", "prepare", "ptq", "set_training",
    "seeded_crops", "use_estimator",
]  # fmt: skip


def export_graph(model: nn.Module, example: Tensor, *, dynamic: bool) -> GraphModule:
    """`torch.export` of `model` in eval mode as a GraphModule, with H and W free (calibration crops
    and validation images differ from `example`'s size). `dynamic` frees the batch too: export
    specialises a batch of 1, so the example is then repeated to a batch of 2.
    """
    if example.ndim != 4 or example.shape[1] != 3:
        raise ValueError(f"example must be an (N, 3, H, W) LR batch, got shape {tuple(example.shape)}")
    if dynamic and example.shape[0] < 2:
        example = example.expand(2, -1, -1, -1).contiguous()
    auto = torch.export.Dim.AUTO
    shapes = ({0: auto, 2: auto, 3: auto} if dynamic else {2: auto, 3: auto},)
    # a copy: the exported graph would otherwise share (and QAT would train) `model`'s parameters
    ep = torch.export.export(copy.deepcopy(model).eval(), (example,), dynamic_shapes=shapes)
    return ep.module()


def prepare(
    model: nn.Module,
    backend: str,
    example: Tensor,
    *,
    qat: bool = False,
    fully_integer: bool = False,
    dynamic: bool | None = None,
    estimator: str = "histogram",
    activations: str = "int8",
    collapse: bool = True,
) -> GraphModule:
    """`model` exported and annotated for `backend`: observers (PTQ) or fake quantization (QAT).

    `collapse` (default): re-parameterisable blocks (edgesr.models.reparam) are collapsed first, so
    PTQ and QAT see the graph that is deployed, one 3x3 conv per block with one int8 weight grid.
    `collapse=False` quantizes every branch on its own: only for the QAT-order benchmark
    (benchmarks/reparam_qat.py), since the collapsed sum of int8 branches is not on an int8 grid.

    `estimator` (PTQ): how each activation's int8 range is chosen from the calibration images
    (ESTIMATORS: "histogram", the backends' own choice, minimises the quantization error of what it
    saw and clips rare extremes; "minmax" keeps the whole range seen). The weights' per-channel
    min/max observers are the backend's either way.

    `example`: an (N, 3, H, W) LR batch in [0, 1]; H and W are always free. `dynamic` (default:
    `qat`) frees the batch too, so a QAT graph trains on patch batches. The returned graph is
    in eval mode for PTQ and train mode for QAT (`set_training` switches it).
    """
    # checks SDK and torchao; `activations`: see edgesr.quant.precision
    quantizer = get_quantizer(backend, qat=qat, fully_integer=fully_integer, activations=activations)
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e, prepare_qat_pt2e

    if collapse:
        model = reparameterize(model)
    graph = export_graph(model, example, dynamic=qat if dynamic is None else dynamic)
    prepared = prepare_qat_pt2e(graph, quantizer) if qat else prepare_pt2e(graph, quantizer)
    if not qat:
        use_estimator(prepared, estimator)
    set_training(prepared, qat)
    return prepared


def estimator_class(name: str) -> type:
    """The torchao observer class of an activation range estimator (ESTIMATORS)."""
    require_torchao()
    from torchao.quantization.pt2e import HistogramObserver, MinMaxObserver

    classes = {"histogram": HistogramObserver, "minmax": MinMaxObserver}
    if name not in classes:
        raise UsageError(f"unknown range estimator {name!r}; valid: {', '.join(ESTIMATORS)}")
    return classes[name]


def use_estimator(prepared: GraphModule, name: str) -> int:
    """Swap every activation observer of a PTQ graph for `name`'s (same dtype, range and scheme);
    returns how many were swapped. Weight observers (per channel) are left as they are."""
    from torchao.quantization.pt2e import HistogramObserver, MinMaxObserver

    cls = estimator_class(name)
    swapped = 0
    for path, m in list(prepared.named_modules()):
        if isinstance(m, HistogramObserver | MinMaxObserver) and type(m) is not cls and m.qscheme in (
            torch.per_tensor_affine, torch.per_tensor_symmetric,
        ):  # fmt: skip
            new = cls(
                dtype=m.dtype, qscheme=m.qscheme, quant_min=m.quant_min, quant_max=m.quant_max, eps=m.eps
            )
            parent, _, child = path.rpartition(".")
            setattr(prepared.get_submodule(parent) if parent else prepared, child, new)
            swapped += 1
    return swapped


def set_training(prepared: GraphModule, mode: bool) -> GraphModule:
    """Put a prepared graph in train or eval mode, and make its `.train()` / `.eval()` work.

    An exported graph refuses `.train()`; torchao's `move_exported_model_to_train/eval` switch its
    ops instead. Eval also pauses the QAT fake-quant observers (validation images must not move the
    ranges being learnt), and sets each fake quant's scale and zero point to what `convert` will use;
    train restores the observers as they were (frozen ones stay frozen). PTQ
    observers keep observing in eval: that is how calibration runs.
    """
    from torchao.quantization.pt2e import FakeQuantizeBase

    if not hasattr(prepared, "_edgesr_modes"):
        prepared._edgesr_modes = True
        prepared.train = types.MethodType(_train, prepared)
        prepared.eval = types.MethodType(lambda self: self.train(False), prepared)
        prepared._edgesr_fake_quants = [m for m in prepared.modules() if isinstance(m, FakeQuantizeBase)]
        prepared.training = not mode  # force the switch below
    return prepared.train(mode)


def _train(self: GraphModule, mode: bool = True) -> GraphModule:
    from torchao.quantization.pt2e import (
        FakeQuantize,
        move_exported_model_to_eval,
        move_exported_model_to_train,
    )

    if mode == self.training:
        return self
    fqs = self._edgesr_fake_quants
    if mode:
        saved = getattr(self, "_edgesr_observing", None)
        for i, m in enumerate(fqs):
            m.__dict__.pop("forward", None)  # back to the fused kernel
            if saved is not None:
                m.observer_enabled[0] = int(saved[i])
    else:
        self._edgesr_observing = [bool(m.observer_enabled[0]) for m in fqs]
        with torch.no_grad():
            for m in fqs:
                m.disable_observer()
                if not m.fake_quant_enabled[0]:
                    continue  # a float control (fake quant off): nothing observed, nothing to sync
                # The fused fake-quant kernel recomputes its scale from the observed range on every
                # call, about 0.4% away from the observer's `calculate_qparams` that `convert` uses.
                # Eval runs the plain fake quant with convert's qparams: it evaluates what is deployed.
                scale, zero_point = m.calculate_qparams()
                m.scale.resize_(scale.shape).copy_(scale)
                m.zero_point.resize_(zero_point.shape).copy_(zero_point)
                if isinstance(m, FakeQuantize):
                    m.forward = types.MethodType(FakeQuantize.forward, m)
    (move_exported_model_to_train if mode else move_exported_model_to_eval)(self)
    self.training = mode
    return self


@torch.no_grad()
def calibrate(prepared: GraphModule, images: Iterable[Tensor]) -> None:
    """Run each (1, 3, h, w) LR image in [0, 1] through `prepared` so its observers see real ranges."""
    n = 0
    for x in images:
        prepared(x)
        n += 1
    if n == 0:
        raise DataError("calibrate: no calibration images (an empty calibration folder?)")


def activation_fake_quants(prepared: GraphModule) -> list[nn.Module]:
    """The fake quants of a QAT graph that quantize activations (not weights), each once.

    A weight is a parameter read by `get_attr`, or (a weight computed in the graph, such as the fixed
    edge filters of a multi-branch block quantized before collapsing) a per-channel fake quant:
    every backend edgesr configures quantizes activations per tensor."""
    from torchao.quantization.pt2e import FakeQuantize, FakeQuantizeBase

    per_channel = (torch.per_channel_affine, torch.per_channel_symmetric)
    out: dict[int, nn.Module] = {}
    for node in prepared.graph.nodes:
        if node.op != "call_module":
            continue
        m = prepared.get_submodule(node.target)
        if not isinstance(m, FakeQuantizeBase) or (isinstance(m, FakeQuantize) and m.qscheme in per_channel):
            continue
        if not (node.args and node.args[0].op == "get_attr"):
            out.setdefault(id(m), m)
    return list(out.values())


@torch.no_grad()
def calibrate_ranges(prepared: GraphModule, images: Iterable[Tensor], estimator: str = "histogram") -> int:
    """Start a QAT graph (in train mode, as `prepare(qat=True)` returns it) from PTQ's activation
    ranges, and keep them fixed; returns how many activation fake quants were set.

    torchao's QAT activation fake quants follow a moving-average min/max of the training batches,
    while PTQ calibrates with histogram observers that choose the range minimising the quantization
    error. Measured on the quickstart student, QAT from min/max ranges ended below PTQ at equal
    training (docs/quantization.md). Here every activation fake quant sees `images` through the
    `estimator`'s observer with its own dtype and range, as PTQ's observer would (fake quantization off
    everywhere, so each sees float inputs), and gets that observer's scale and zero point. Its
    min/max are set to the range those qparams encode, so `calculate_qparams`, eval and `convert`
    reproduce them, and its observer is turned off: the ranges stay fixed and training adapts the
    weights to them. Weight fake quants observe their weights in these passes, as in a training
    step, and keep following them.
    """
    from torchao.quantization.pt2e import FakeQuantizeBase

    observer = estimator_class(estimator)
    if not prepared.training:
        raise ValueError("calibrate_ranges: the QAT graph must be in train mode (set_training(graph, True))")
    fqs = activation_fake_quants(prepared)
    if not fqs:
        raise ValueError("calibrate_ranges: the graph has no activation fake quants (is it a QAT graph?)")
    everything = [m for m in prepared.modules() if isinstance(m, FakeQuantizeBase)]
    observers = [
        observer(
            dtype=m.dtype,
            qscheme=m.qscheme,
            quant_min=m.quant_min,
            quant_max=m.quant_max,
            eps=m.activation_post_process.eps,
        )
        for m in fqs
    ]
    pairs = list(zip(fqs, observers, strict=True))
    hooks = [m.register_forward_pre_hook(lambda _m, a, h=h: h(a[0])) for m, h in pairs]
    fake_quant_was = [bool(m.fake_quant_enabled[0]) for m in everything]
    try:
        for m in everything:
            m.disable_fake_quant()
        for m in fqs:
            m.disable_observer()
        calibrate(prepared, images)
    finally:
        for h in hooks:
            h.remove()
        for m, on in zip(everything, fake_quant_was, strict=True):
            m.enable_fake_quant(on)
    for m, h in pairs:
        scale, zero_point = h.calculate_qparams()
        lo = (m.quant_min - zero_point.float()) * scale
        hi = (m.quant_max - zero_point.float()) * scale
        obs = m.activation_post_process
        obs.min_val.resize_(lo.shape).copy_(lo)
        obs.max_val.resize_(hi.shape).copy_(hi)
        m.scale.resize_(scale.shape).copy_(scale)
        m.zero_point.resize_(zero_point.shape).copy_(zero_point)
    return len(fqs)


def convert(prepared: GraphModule, backend: str) -> GraphModule:
    """The int8 q/dq graph of a calibrated or QAT-trained `prepared` graph, in eval mode.

    For `litert` the weights are left as float + quantize ops (`fold_quantize=False`): that is the
    form `litert_torch.convert` recognises.
    """
    require_torchao()
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    set_training(prepared, False)
    return convert_pt2e(prepared, fold_quantize=check_backend(backend) != "litert")


def calibration_images(
    scale: int, n: int = 8, size: int = 64, seed: int = 0, source: str = CALIBRATION_SOURCE
) -> list[Tensor]:
    """`n` LR crops (1, 3, size, size) in [0, 1] from the photos of `source` (a data set spec: the
    built-in *train* photos by default, never val; or a folder of the user's own images).

    Crops cycle over the photos at seeded positions, so calibration is reproducible.
    """
    if n < 1 or size < 8:
        raise UsageError(f"calibration_images: need n >= 1 and size >= 8 LR pixels, got n={n}, size={size}")
    return seeded_crops([load_lr(p, scale) for p in open_dataset(source, scale)], n, size, seed)


def seeded_crops(lrs: Sequence[np.ndarray], n: int, size: int, seed: int = 0) -> list[Tensor]:
    """`n` crops (1, 3, s, s), s = min(size, image side), cycling over the uint8 HxWx3 `lrs` at
    positions drawn from `seed`."""
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(n):
        lr = lrs[i % len(lrs)]
        h, w = lr.shape[:2]
        s = min(size, h, w)
        top, left = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        crops.append(to_tensor(np.ascontiguousarray(lr[top : top + s, left : left + s])).unsqueeze(0))
    return crops


def ptq(
    model: nn.Module,
    backend: str,
    example: Tensor,
    images: list[Tensor] | None = None,
    *,
    fully_integer: bool = False,
    dynamic: bool = False,
    scale: int | None = None,
    estimator: str = "histogram",
    activations: str = "int8",
) -> GraphModule:
    """Post-training static int8: prepare, calibrate on `images` (default: 8 built-in train crops
    at the model's scale), convert. H and W of the result are free; `dynamic` frees the batch."""
    if images is None:
        images = calibration_images(scale or int(getattr(model, "scale", 2)))
    prepared = prepare(
        model, backend, example, fully_integer=fully_integer, dynamic=dynamic, estimator=estimator,
        activations=activations,
    )  # fmt: skip
    calibrate(prepared, images)
    return convert(prepared, backend)
