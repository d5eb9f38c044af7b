"""What one training step optimises, per `train.mode`; the trainer only runs the loop.

Each objective is an `nn.Module` whose `forward(lr, hr, step)` returns `(loss, terms)` and whose
trainable parameters are exactly what the optimizer updates (the network, plus e.g. FitNet
regressors); frozen teachers and embeddings have `requires_grad=False`. `objective.net` is the
network that checkpoints, validation and export see.

- `single`:  L = L1(net(LR), HR) + sum_i loss_i(net(LR), HR)
- `csd`:     L = sum_w [L1(S_w, HR) + sum_i loss_i(S_w, HR)] + lambda_T [L1(T, HR) + sum_i loss_i(T, HR)]
                 + lambda_CL sum_w CL(S_w, T, negatives)
             with teacher and students sharing one set of weights (CSD's CSSR-Net)
             (loss_i: the recipe's `losses`, each weighted, reading only an output and the batch, e.g. `edge`;
             logged with their weight, unlike csd_objective's unweighted terms)
- `distill`: L = sum_i weight_i * loss_i(student, frozen teacher, HR, tapped features), each loss
             called with the inputs its class declares (`reads`, edgesr.losses.spec)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edgesr.errors import CheckpointError, RecipeError
from edgesr.losses import (
    LOSSES,
    ContrastiveLoss,
    DistillBatch,
    Reads,
    call_loss,
    csd_objective,
    l1,
    negative_set,
    reads_of,
)
from edgesr.models.taps import default_taps, run_with_taps
from edgesr.recipe import LossCfg, Recipe


def _step_generator(seed: int, step: int) -> torch.Generator:
    """Per-step randomness (negatives, FAKD positions) derived from (seed, step): resumable."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def _term_names(cfgs: tuple[LossCfg, ...]) -> list[str]:
    """One name per recipe loss: its loss name, numbered where the recipe lists a name twice."""
    counts = {n: [c.name for c in cfgs].count(n) for n in {c.name for c in cfgs}}
    return [f"{c.name}{i}" if counts[c.name] > 1 else c.name for i, c in enumerate(cfgs)]


class OwnLosses(nn.Module):
    """The recipe's `losses` of a `single` or `csd` run, added to its L1: each reads only a network
    output and the batch (`Reads.standalone`; the recipe refuses any other), weight included."""

    def __init__(self, recipe: Recipe) -> None:
        super().__init__()
        cfgs = tuple(recipe.train.losses)
        self.seed = recipe.seed
        self.names = _term_names(cfgs)
        self.losses = nn.ModuleList(LOSSES.get(c.name)(weight=c.weight, **c.args) for c in cfgs)

    def forward(self, lr: Tensor, hr: Tensor, sr: Tensor, step: int) -> list[Tensor]:
        if not self.losses:
            return []
        batch = DistillBatch(lr, hr, sr, None, generator=_step_generator(self.seed, step))
        return [call_loss(m, batch) for m in self.losses]


class SingleObjective(nn.Module):
    def __init__(self, net: nn.Module, recipe: Recipe) -> None:
        super().__init__()
        self.net = net
        self.own = OwnLosses(recipe)

    def forward(self, lr: Tensor, hr: Tensor, step: int) -> tuple[Tensor, dict[str, float]]:
        sr = self.net(lr)
        loss = l1(sr, hr)
        terms = self.own(lr, hr, sr, step)
        if not terms:
            return loss, {"l1": loss.item()}
        total = torch.stack([loss, *terms]).sum()
        values = torch.stack([loss, *terms, total]).detach().cpu().tolist()
        return total, dict(zip(["l1", *self.own.names, "total"], values, strict=True))


class CSDObjective(nn.Module):
    """Teacher (width 1) and channel-split students of one shared network, trained jointly."""

    def __init__(self, net: nn.Module, recipe: Recipe) -> None:
        super().__init__()
        self.net = net
        self.widths = tuple(recipe.train.widths)
        self.cfg, self.scale, self.seed = recipe.train.csd, recipe.scale, recipe.seed
        self.own = OwnLosses(recipe)
        c = self.cfg
        # lambda_cl 0 ("joint training, no CL"): no VGG and no negatives, which were made and thrown
        # away on every step (recipes/ecbsr_csd_x2.yaml here: 8.2 it/s; an ECBSR 6x32 csd run at one
        # width with lambda_cl 0 ran at 0.8 it/s before)
        self.cl = (
            ContrastiveLoss(layers=c.layers, layer_weights=c.layer_weights, vgg_weights=c.vgg_weights)
            if c.lambda_cl
            else None
        )

    def forward(self, lr: Tensor, hr: Tensor, step: int) -> tuple[Tensor, dict[str, float]]:
        teacher = self.net(lr, width=1.0)  # N x 3 x sH x sW
        students = {w: self.net(lr, width=w) for w in self.widths}
        negatives = (
            negative_set(lr, self.scale, self.cfg.negatives, _step_generator(self.seed, step))
            if self.cl is not None
            else None
        )
        total, terms = csd_objective(
            students, teacher, hr, negatives, self.cfg.lambda_teacher, self.cfg.lambda_cl, self.cl
        )
        if not self.own.losses:
            return total, terms
        # the recipe's own losses go with each width's L1, the teacher's weighted like its L1
        names, values = [], []
        for w, s in students.items():
            names += [f"{n}_student_w{w:g}" for n in self.own.names]
            values += self.own(lr, hr, s, step)
        t_terms = self.own(lr, hr, teacher, step)
        names += [f"{n}_teacher" for n in self.own.names]
        total = total + torch.stack(values).sum() + self.cfg.lambda_teacher * torch.stack(t_terms).sum()
        floats = torch.stack([*values, *t_terms, total]).detach().cpu().tolist()
        return total, {**terms, **dict(zip([*names, "total"], floats, strict=True))}


def _tap_paths(model: nn.Module, names: list[str], role: str) -> dict[str, str]:
    available = default_taps(model)
    missing = [n for n in names if n not in available]
    if missing:
        raise RecipeError(f"the {role} has no tap {missing} (a shallow body); its taps: {sorted(available)}")
    return {n: available[n] for n in names}


class DistillObjective(nn.Module):
    """A frozen teacher distilled into a stand-alone student with a weighted sum of losses."""

    def __init__(self, student: nn.Module, teacher: nn.Module, recipe: Recipe) -> None:
        super().__init__()
        self.net = student
        self.teacher = teacher.eval().requires_grad_(False)
        self.scale, self.seed = recipe.scale, recipe.seed
        self.negatives_k = recipe.train.csd.negatives
        self.cfgs = tuple(recipe.train.losses)
        classes = [LOSSES.get(c.name) for c in self.cfgs]
        reads = [reads_of(cls) for cls in classes]  # what each loss declares it reads
        taps = sorted({t for c, r in zip(self.cfgs, reads, strict=True) if r.features for t in c.taps})
        self.student_taps = _tap_paths(student, taps, "student")
        self.teacher_taps = _tap_paths(teacher, taps, "teacher")
        s_ch, t_ch = self._channels()
        self.losses = nn.ModuleList(
            cls(weight=c.weight, **self._channel_args(c, r, s_ch, t_ch), **c.args)
            for c, cls, r in zip(self.cfgs, classes, reads, strict=True)
        )
        self.names = _term_names(self.cfgs)

    @staticmethod
    def _channel_args(
        cfg: LossCfg, reads: Reads, s_ch: dict[str, int], t_ch: dict[str, int]
    ) -> dict[str, list[int]]:
        if not reads.channels:
            return {}
        return {
            "student_channels": [s_ch[t] for t in cfg.taps],
            "teacher_channels": [t_ch[t] for t in cfg.taps],
        }

    def _channels(self) -> tuple[dict[str, int], dict[str, int]]:
        """Channel count at each tap, from one tiny dry-run forward of each network."""
        if not self.student_taps:
            return {}, {}
        x = torch.zeros(1, 3, 8, 8, device=next(self.net.parameters()).device)
        with torch.no_grad():
            _, s = run_with_taps(self.net, x, self.student_taps)
            _, t = run_with_taps(self.teacher, x, self.teacher_taps)
        return {k: v.shape[1] for k, v in s.items()}, {k: v.shape[1] for k, v in t.items()}

    def train(self, mode: bool = True) -> DistillObjective:
        super().train(mode)
        self.teacher.eval()  # the teacher is a fixed reference
        return self

    def forward(self, lr: Tensor, hr: Tensor, step: int) -> tuple[Tensor, dict[str, float]]:
        with torch.no_grad():
            teacher, t_feats = run_with_taps(self.teacher, lr, self.teacher_taps)
        student, s_feats = run_with_taps(self.net, lr, self.student_taps)
        batch = DistillBatch(lr, hr, student, teacher, s_feats, t_feats,
                             _step_generator(self.seed, step), self.scale, self.negatives_k)  # fmt: skip
        terms = [call_loss(m, batch, c.taps) for c, m in zip(self.cfgs, self.losses, strict=True)]
        total = torch.stack(terms).sum()  # stack keeps every term in the graph
        values = torch.stack([*terms, total]).detach().cpu().tolist()
        return total, dict(zip([*self.names, "total"], values, strict=True))


def _loss_params(objective: nn.Module) -> dict[str, nn.Parameter]:
    """Trainable parameters outside `objective.net`, keyed without the `losses.` prefix (so
    checkpoints written when only `DistillObjective.losses` could hold any still resume)."""
    return {
        k.removeprefix("losses."): p
        for k, p in objective.named_parameters()
        if p.requires_grad and not k.startswith("net.")
    }


def extra_state(objective: nn.Module) -> dict[str, Tensor]:
    """Trainable parameters outside `objective.net` (e.g. FitNet regressors), saved for exact resume."""
    return {k: p.detach().cpu().clone() for k, p in _loss_params(objective).items()}


def load_extra_state(objective: nn.Module, state: dict[str, Tensor]) -> None:
    params = _loss_params(objective)
    if set(state) != set(params):
        raise CheckpointError(
            f"loss parameters differ from the checkpoint's: {sorted(set(state) ^ set(params))}"
        )
    with torch.no_grad():
        for k, v in state.items():
            params[k].copy_(v)
