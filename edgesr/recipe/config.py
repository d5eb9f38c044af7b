"""A recipe is a frozen, typed dataclass tree loaded from YAML: every default lives here.

This module holds the recipe schema (the sections, their semantic checks, model arguments checked
against the model's constructor); edgesr/recipe/load.py the recipe-level API: load, resolve, dump,
save, hash, replace, list. The generic machinery it stands on (typed conversion with key-path
errors, the strict YAML loader, `a.b=value` overrides) lives in edgesr.schema. Semantic checks live
in each section's `__post_init__`, so a recipe built in Python is checked exactly like one loaded from a file.

    r = load_recipe("recipes/quickstart.yaml", ["train.steps=200", "train.widths=[0.25, 0.5]"])
    r.train.optim.lr                          # 0.0005
    save_recipe(r, run_dir / "recipe.yaml")   # load_recipe(that file) == r
    recipe_hash(r)                            # 16 hex chars, stored in checkpoints
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from edgesr.errors import UnknownNameError
from edgesr.recipe.export_cfg import ExportCfg
from edgesr.registry import unknown_name_message
from edgesr.schema import RecipeError, _check, _fail, check_kwargs
from edgesr.targets import ESTIMATORS, quant_backends
from edgesr.yamlfile import StrictLoader

__all__ = [
    "RECIPES_DIR", "VGG_LAYERS", "CSDCfg", "DataCfg", "EvalCfg", "LossCfg", "ModelCfg", "OptimCfg",
    "QuantCfg", "Recipe", "RecipeError", "RecipeLoader", "TrainCfg", "qat_losses", "signature_for",
]  # fmt: skip

RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"

# The taps edgesr.losses.vgg.VGG19Features exposes (a test keeps the two in step).
VGG_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")

# The YAML loader recipes are read with; the generic name lives in edgesr.schema.
RecipeLoader = StrictLoader

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# The schema.


def signature_for(model_name: str) -> inspect.Signature:
    """Constructor signature of a registered model; KeyError listing valid names when unknown.

    Looked up by name at call time, so tests can monkeypatch `edgesr.recipe.signature_for`.
    """
    from edgesr.models import MODELS, model_signature  # models pull in torch: only when validating

    if model_name not in MODELS:
        raise UnknownNameError(unknown_name_message("model", model_name, MODELS.names()))
    return model_signature(model_name)


@dataclass(frozen=True)
class ModelCfg:
    name: str = "edsr"
    # Constructor arguments, checked against the model's signature; `scale` comes from Recipe.scale.
    args: dict[str, Any] = field(default_factory=dict)
    width_multiple: int = 8  # student channel counts snap to multiples of this (phone fast paths)

    def __post_init__(self) -> None:
        try:
            sig = signature_for(self.name)
        except KeyError as e:
            raise _fail("name", str(e.args[0] if e.args else e)) from None
        object.__setattr__(self, "args", check_kwargs(f"model {self.name!r}", sig, self.args, _FROM_RECIPE))
        _check(self.width_multiple >= 1, "width_multiple", f"must be >= 1, got {self.width_multiple}")


# Constructor arguments the recipe sets from its own keys, with where to set them instead.
_FROM_RECIPE = {
    "scale": "do not set it here: the scale comes from the recipe's top-level `scale` key",
    "width_multiple": "do not set it here: use the `width_multiple` key of this section",
}


@dataclass(frozen=True)
class DataCfg:
    train: str = "builtin:train"  # a data folder, a catalog name (div2k: edgesr data ls), builtin:train
    val: tuple[str, ...] = ("builtin:val",)
    patch_size: int = 48  # LR patch side; the HR patch is patch_size * scale
    batch_size: int = 16
    workers: int = 2
    cache_dir: str | None = None
    # Decode the training set into memory once when it fits in this many GB (HR + LR, uint8), else
    # decode per patch. 8 keeps DIV2K (7.1 GB decoded) in memory, as before; prepared sub-images
    # (edgesr data prepare: 3.3x that, overlapping crops) are read per patch, 8.5x faster per
    # loader worker than 2K PNGs (python -m benchmarks loader). Per training process.
    preload_max_gb: float = 8.0
    # Fraction of training patches picked on purpose among the flattest: each such patch is the
    # smoothest of `smooth_pool` random positions. Smooth patches are rare in random crops, and
    # int8 fails on smooth photos (docs/quantization.md); 0 = uniform random crops.
    smooth_patches: float = 0.0
    smooth_pool: int = 16

    def __post_init__(self) -> None:
        _check(bool(self.train), "train", "must not be empty")
        _check(self.preload_max_gb >= 0, "preload_max_gb", f"must be >= 0, got {self.preload_max_gb}")
        _check(all(self.val), "val", "entries must not be empty")
        _check(self.patch_size >= 8, "patch_size", f"must be >= 8 (LR pixels), got {self.patch_size}")
        _check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.workers >= 0, "workers", f"must be >= 0, got {self.workers}")
        f = self.smooth_patches
        _check(0 <= f <= 1, "smooth_patches", f"must be in [0, 1], got {f}")
        _check(self.smooth_pool >= 2, "smooth_pool", f"must be >= 2 positions, got {self.smooth_pool}")


@dataclass(frozen=True)
class OptimCfg:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    milestones: tuple[int, ...] = ()  # step indices where lr *= gamma
    gamma: float = 0.5
    grad_clip: float | None = None  # max global grad norm; None = no clipping

    def __post_init__(self) -> None:
        _check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        _check(
            all(0 <= b < 1 for b in self.betas), "betas", f"each must be in [0, 1), got {list(self.betas)}"
        )
        _check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        ms = self.milestones
        _check(
            all(m > 0 for m in ms) and list(ms) == sorted(set(ms)),
            "milestones",
            f"must be positive and strictly increasing, got {list(ms)}",
        )
        _check(self.gamma > 0, "gamma", f"must be > 0, got {self.gamma}")
        _check(
            self.grad_clip is None or self.grad_clip > 0,
            "grad_clip",
            f"must be > 0 or null, got {self.grad_clip}",
        )


@dataclass(frozen=True)
class CSDCfg:
    lambda_teacher: float = 1.0  # weight of L1(teacher, HR)
    lambda_cl: float = 200.0  # weight of the contrastive term; 200 is tuned for VGG fed 0..255 values
    negatives: int = 10  # K bicubic-upsampled inputs of other images in the batch
    vgg_weights: str | None = None  # torchvision-layout VGG19 state dict; None = seeded random VGG19
    layers: tuple[str, ...] = VGG_LAYERS
    layer_weights: tuple[float, ...] = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)

    def __post_init__(self) -> None:
        _check(self.lambda_teacher >= 0, "lambda_teacher", f"must be >= 0, got {self.lambda_teacher}")
        _check(self.lambda_cl >= 0, "lambda_cl", f"must be >= 0, got {self.lambda_cl}")
        _check(self.negatives >= 1, "negatives", f"must be >= 1, got {self.negatives}")
        _check(bool(self.layers), "layers", "must name at least one VGG19 layer")
        for i, layer in enumerate(self.layers):
            if layer not in VGG_LAYERS:
                raise _fail(f"layers[{i}]", unknown_name_message("VGG19 layer", layer, VGG_LAYERS))
        _check(len(set(self.layers)) == len(self.layers), "layers", f"has duplicates: {list(self.layers)}")
        _check(
            len(self.layer_weights) == len(self.layers),
            "layer_weights",
            f"has {len(self.layer_weights)} entries but layers has {len(self.layers)}: give one weight "
            "per layer",
        )
        _check(
            all(w >= 0 for w in self.layer_weights),
            "layer_weights",
            f"must be >= 0, got {list(self.layer_weights)}",
        )


TAP_NAMES = ("stage1", "stage2", "stage3", "body")  # see edgesr.models.taps.default_taps


@dataclass(frozen=True)
class LossCfg:
    """One weighted term of a recipe's `train.losses` (see docs/distillation.md)."""

    name: str  # a registered loss (edgesr.losses.LOSSES)
    weight: float = 1.0
    taps: tuple[str, ...] = ("stage1", "stage2", "stage3")  # feature losses: paired by tap name
    args: dict[str, Any] = field(default_factory=dict)  # extra constructor arguments of the loss

    def __post_init__(self) -> None:
        from edgesr.losses import LOSSES  # pulls in torch: only when validating

        if self.name not in LOSSES:
            raise _fail("name", unknown_name_message("loss", self.name, LOSSES.names()))
        # checked here, not when the trainer builds the loss (a traceback after the data loaded)
        reserved = {**_LOSS_ARGS_SET_ELSEWHERE, **_LOSS_ARGS_MOVED.get(self.name, {})}
        sig = inspect.signature(LOSSES.get(self.name))
        object.__setattr__(self, "args", check_kwargs(f"loss {self.name!r}", sig, self.args, reserved))
        _check(self.weight >= 0, "weight", f"must be >= 0, got {self.weight}")
        for i, tap in enumerate(self.taps):
            if tap not in TAP_NAMES:
                raise _fail(f"taps[{i}]", unknown_name_message("tap", tap, TAP_NAMES))


_LOSS_ARGS_SET_ELSEWHERE = {
    "weight": "set it with the loss's own `weight` key, next to `name`",
    "student_channels": "set by the trainer from the taps' channel counts",
    "teacher_channels": "set by the trainer from the taps' channel counts",
}
_LOSS_ARGS_MOVED = {  # arguments a loss had before, with what replaced them
    "edge": {"target": "`target: teacher` is now its own loss, `name: edge_kd`; `target: hr` is `edge`"},
}

QUANT_BACKENDS = quant_backends()  # each target's int8 backend (edgesr.targets), as edgesr.quant uses them


def qat_losses() -> tuple[str, ...]:
    """The losses a `qat` stage may use: those that read no tapped features (from their `reads`
    declarations), since taps are forward hooks, which an exported fake-quant graph does not call."""
    from edgesr.losses import output_losses  # pulls in torch: only when validating

    return output_losses()


def own_objective_losses() -> tuple[str, ...]:
    """The losses `single` and `csd` runs may add to their L1: those reading only the student's
    output and the batch (no teacher output, no tapped features: such a run has no frozen teacher)."""
    from edgesr.losses import standalone_losses  # pulls in torch: only when validating

    return standalone_losses()


ACTIVATION_RANGES = ("calibrate", "observe")


@dataclass(frozen=True)
class QuantCfg:
    """The int8 target of a `qat` stage, and the PTQ baseline it is compared with."""

    backend: str = "xnnpack"  # xnnpack (ExecuTorch), litert (TFLite), coreml
    fully_integer: bool = False  # int8 I/O; add, clamp and depth-to-space quantized too (NPU targets)
    # Where the activation ranges come from. calibrate: PTQ's histogram calibration on the
    # calibration crops before training, then fixed (training adapts the weights to them);
    # observe: a moving-average min/max of the training batches (torchao's QAT default).
    activation_ranges: str = "calibrate"
    # Step after which the fake-quant ranges stop following the data (weights and activations keep
    # their last ranges and training only adapts the weights to them); None = observe throughout.
    freeze_observers_at: int | None = None
    # false = the float control of a QAT run: same graph, data and steps, fake quantization off
    # (tells the training gain apart from the quantization recovery, see benchmarks/quant.py)
    fake_quant: bool = True
    calibration_images: int = 8  # built-in train crops that calibrate PTQ (and QAT's start)
    calibration_size: int = 64  # LR side of each calibration crop, pixels
    # Which activations are int8 (edgesr.quant.precision): int8, or float-ends (input shift, head,
    # skip, last conv and output float); null = the backend's export default (float-ends, but int8
    # for fully-integer graphs). The export keeps what QAT trained.
    activations: str | None = None
    # The range estimator of `activation_ranges: calibrate` (histogram, minmax); null = minmax with
    # float ends, else histogram (the PTQ export's rule, measured on real photos).
    estimator: str | None = None

    def __post_init__(self) -> None:
        if self.backend not in QUANT_BACKENDS:
            raise _fail("backend", unknown_name_message("quantization backend", self.backend, QUANT_BACKENDS))
        _check(
            self.freeze_observers_at is None or self.freeze_observers_at >= 1,
            "freeze_observers_at",
            f"must be >= 1 or null, got {self.freeze_observers_at}",
        )
        _check(
            self.activation_ranges in ACTIVATION_RANGES,
            "activation_ranges",
            f"must be one of {', '.join(ACTIVATION_RANGES)}, got {self.activation_ranges!r}",
        )
        _check(
            self.activations in (None, "int8", "float-ends"),
            "activations",
            f"must be int8, float-ends or null (the backend's default), got {self.activations!r}",
        )
        _check(
            self.activations != "float-ends" or not self.fully_integer,
            "activations",
            "float-ends keeps float ops, which a fully_integer graph has none of; use int8",
        )
        _check(
            self.estimator in (None, *ESTIMATORS),
            "estimator",
            f"must be one of {', '.join(ESTIMATORS)} or null, got {self.estimator!r}",
        )
        n = self.calibration_images
        _check(n >= 1, "calibration_images", f"must be >= 1, got {n}")
        _check(self.calibration_size >= 8, "calibration_size", f"must be >= 8, got {self.calibration_size}")


def _check_widths(key: str, widths: tuple[float, ...]) -> None:
    for i, w in enumerate(widths):
        _check(0 < w <= 1, f"{key}[{i}]", f"width must be in (0, 1], got {w}")
    _check(len(set(widths)) == len(widths), key, f"has duplicates: {list(widths)}")


def _zoo_teacher(init: str) -> Any:
    """The zoo entry `init` names (`zoo:NAME`), None for a path; an unknown name fails `train.init`
    with the valid names and the closest one."""
    if not init.startswith("zoo:"):
        return None
    from edgesr.models.zoo import lookup  # models pull in torch: only when a recipe names the zoo

    try:
        return lookup(init)
    except UnknownNameError as e:
        raise _fail("init", str(e)) from None


@dataclass(frozen=True)
class TrainCfg:
    # csd: the width-1 teacher and every student width train jointly on one set of weights.
    # single: exactly one width, trained alone (width 1 = a plain model, < 1 = a narrow student).
    # Both train with L1 to HR plus any `losses` that read only the student's output and HR (`edge`).
    # distill: a frozen teacher (`init`) distilled into one stand-alone student width with `losses`.
    # qat: the trained student (`student_from`, a materialized student or a CSD checkpoint sliced at
    # `widths[0]`) fine-tuned with int8 fake quantization for `quant.backend`, distilled from the
    # float teacher (`init`) with output `losses` (docs/quantization.md).
    mode: Literal["csd", "single", "distill", "qat"] = "csd"
    widths: tuple[float, ...] = (0.25,)
    # Checkpoint to start from (a teacher). In single mode with width < 1 the student starts from the
    # teacher's leading slice ("teacher-slice init"). None = from scratch. Existence is checked by the
    # trainer, so recipes can ship placeholder paths.
    init: str | None = None
    # distill mode: the student starts as a leading slice (of `student_from`, default the teacher),
    # or from scratch. `student_from` lets a CSD run seed the student while a stronger teacher distils.
    student_init: Literal["slice", "scratch"] = "slice"
    student_from: str | None = None
    losses: tuple[LossCfg, ...] = ()
    steps: int = 1000
    optim: OptimCfg = field(default_factory=OptimCfg)
    csd: CSDCfg = field(default_factory=CSDCfg)
    quant: QuantCfg = field(default_factory=QuantCfg)  # qat mode only
    checkpoint_every: int = 1000
    val_every: int = 1000
    log_every: int = 50
    amp: Literal["auto", "bf16", "off"] = "auto"  # auto = bf16 autocast on CUDA, off on CPU
    channels_last: Literal["auto", "on", "off"] = "auto"
    compile: bool = False

    def __post_init__(self) -> None:
        _check(bool(self.widths), "widths", "must list at least one width")
        _check_widths("widths", self.widths)
        if self.mode in ("single", "distill", "qat"):
            _check(
                len(self.widths) == 1,
                "widths",
                f"{self.mode} mode trains exactly one width, got {list(self.widths)}",
            )
        if self.mode == "distill":
            _check(self.init is not None, "init", "distill mode needs the teacher checkpoint to distil from")
            _check(bool(self.losses), "losses", "distill mode needs at least one loss, e.g. [{name: l1}]")
            _check(
                self.widths[0] < 1,
                "widths",
                f"the distilled student must be narrower than 1, got {self.widths[0]}",
            )
        if self.mode == "qat":
            _check(self.init is not None, "init", "qat mode needs the float teacher checkpoint to distil")
            _check(
                self.student_from is not None, "student_from", "qat mode needs the trained student checkpoint"
            )
            _check(bool(self.losses), "losses", "qat mode needs at least one loss, e.g. [{name: output_kd}]")
            allowed = qat_losses()
            for i, loss in enumerate(self.losses):
                _check(
                    loss.name in allowed,
                    f"losses[{i}].name",
                    f"qat mode takes losses on outputs ({', '.join(allowed)}), got {loss.name!r}: feature "
                    "taps are forward hooks, which an exported fake-quant graph does not call",
                )
            # widths[0] < 1: a channel-split student of `init`; 1: the full net, distilled from its own
            # float checkpoint (`init` = `student_from`, e.g. recipes/plain_qat.yaml)
        if self.mode in ("csd", "single"):
            # added to the mode's own L1 (every width's, in csd); a loss that needs a teacher is refused
            # here rather than ignored
            allowed = tuple(n for n in own_objective_losses() if n != "l1")
            for i, loss in enumerate(self.losses):
                _check(
                    loss.name != "l1",
                    f"losses[{i}].name",
                    f"{self.mode} mode already trains with L1 to HR: list only the terms to add to it "
                    f"({', '.join(allowed)})",
                )
                _check(
                    loss.name in allowed,
                    f"losses[{i}].name",
                    f"{self.mode} mode adds losses that read only the student's output and HR "
                    f"({', '.join(allowed)}) to its L1; {loss.name!r} needs a teacher or tapped features: "
                    "use mode: distill with the teacher in train.init",
                )
        if self.mode == "csd":
            _check(
                all(w < 1 for w in self.widths),
                "widths",
                f"csd student widths must be < 1 (the width-1 teacher is always trained), "
                f"got {list(self.widths)}",
            )
        for key in ("steps", "checkpoint_every", "val_every", "log_every"):
            value = getattr(self, key)
            _check(value > 0, key, f"must be > 0, got {value}")
        if self.init is not None:
            _zoo_teacher(self.init)  # `zoo:NAME`: an unknown NAME fails here, listing the valid ones


@dataclass(frozen=True)
class EvalCfg:
    self_ensemble: bool = False  # average over the 8 flips/transposes ("+" in SR tables)
    widths: tuple[float, ...] = ()  # () = the trained widths

    def __post_init__(self) -> None:
        _check_widths("widths", self.widths)


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str = ""
    scale: int = 4
    seed: int = 0
    output_dir: str = "runs"  # a run writes to output_dir/<name>-<timestamp> unless given --run-dir
    model: ModelCfg = field(default_factory=ModelCfg)
    data: DataCfg = field(default_factory=DataCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    eval: EvalCfg = field(default_factory=EvalCfg)
    export: ExportCfg = field(default_factory=ExportCfg)  # how the student ships (edgesr export reads it)

    def __post_init__(self) -> None:
        _check(
            re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", self.name) is not None,
            "name",
            f"must be a file-name-safe word (letters, digits, _ . + -), got {self.name!r}",
        )
        _check(self.scale in (2, 3, 4), "scale", f"must be 2, 3 or 4, got {self.scale}")
        _check(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        teacher = _zoo_teacher(self.train.init) if self.train.init else None
        if teacher is not None:
            _check(
                teacher.scale == self.scale,
                "train.init",
                f"{self.train.init} is a x{teacher.scale} teacher, but the recipe's scale is {self.scale}: "
                f"use the zoo's x{self.scale} teacher or set scale: {teacher.scale}",
            )
        trained = set(self.train.widths) | ({1.0} if self.train.mode == "csd" else set())
        for i, w in enumerate(self.eval.widths):
            _check(
                w in trained,
                f"eval.widths[{i}]",
                f"width {w} is not trained by this recipe (trained: {sorted(trained)})",
            )

    @property
    def eval_widths(self) -> tuple[float, ...]:
        """The widths to evaluate: eval.widths, or the trained widths when that is empty."""
        return self.eval.widths or self.train.widths
