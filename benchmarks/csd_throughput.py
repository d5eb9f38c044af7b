"""CSD training-step throughput: edgesr against the official CSD PyTorch code, interleaved.

    python -m benchmarks csd-throughput --csd-code PATH [--n-resblocks 4] [--n-feats 64] [--width 0.25]
        [--negatives 4] [--batch 4] [--patch 24] [--steps 5] [--rounds 5] [--threads 2]

PATH is a checkout of github.com/Booooooooooo/CSD (the folder holding `PyTorch version/`). One CSD
configuration (EDSR at width 1 and `--width`, L1 on both, the contrastive loss on the 5 VGG19 ReLU
layers with the recipe's weights 1/32 .. 1, the teacher detached in it as the official README's
`--contrast_t_detach` does, and `--negatives` bicubic negatives, Adam) is trained by each code
base on the same random batches, alternating blocks of `--steps` steps for `--rounds` rounds (the
order flips every round), and the median steps/s of each and their ratio are printed.

The official side imports, unmodified, the checkout's `model.edsr.EDSR` and
`loss.contrast_loss.ContrastLoss`. Two things are stubbed from outside, only so that it runs on a
CPU machine with no network: `torchvision.models.vgg19(pretrained=True)` (its weight download)
returns the same torchvision-layout VGG19 with seeded random weights that edgesr uses by default
(ReLUs in place, as torchvision's are), and `nn.Module.cuda()` returns the module where CUDA is not
available (the checkout calls `.cuda()` on the VGG). The step itself is restated from
`trainer/slim_contrast_trainer.py` (teacher forward, student forward at the width, L1s, negatives
`Upsample(bicubic)` of a random permutation of the batch's LR, `ContrastLoss(teacher, student, neg)`,
backward, Adam step); that module is not imported because its other imports (tensorboardX, NIQE,
the adversarial and perceptual losses) and its epoch loop (DIV2K loader, per-epoch test) are not the
step. Inputs are 0..255 on the official side (its `rgb_range`) and 0..1 on edgesr's.

edgesr's side is `edgesr.train.modes.build_objective` on `recipes/csd_edsr_x2_w025.yaml` with the
same model size, width, negatives and weights (its negatives are MATLAB-exact bicubic, as its
protocol requires; that cost is part of edgesr's step).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("csd-throughput", help="CSD training steps/s: edgesr vs the official CSD code")
    p.add_argument("--csd-code", type=Path, required=True, help="checkout of github.com/Booooooooooo/CSD")
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--n-resblocks", type=int, default=4)
    p.add_argument("--n-feats", type=int, default=64)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--negatives", type=int, default=4)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--patch", type=int, default=24, help="LR patch side")
    p.add_argument("--steps", type=int, default=5, help="steps per timed block")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(run=run)


@contextlib.contextmanager
def _stubs() -> Iterator[None]:
    """torchvision's VGG19 download -> edgesr's seeded random VGG19; `.cuda()` -> no-op without CUDA."""
    from edgesr.losses.vgg import build_vgg19_layers

    def vgg19(pretrained: bool = False, **_: object) -> types.SimpleNamespace:
        features = build_vgg19_layers()
        for m in features:
            if isinstance(m, nn.ReLU):
                m.inplace = True  # as torchvision's
        return types.SimpleNamespace(features=features)

    tv = types.ModuleType("torchvision")
    tv.models = types.SimpleNamespace(vgg19=vgg19)  # type: ignore[attr-defined]
    saved = {k: sys.modules.get(k) for k in ("torchvision", "torchvision.models")}
    sys.modules["torchvision"], sys.modules["torchvision.models"] = tv, tv.models  # type: ignore[assignment]
    cuda = nn.Module.cuda
    if not torch.cuda.is_available():
        nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.cuda = cuda  # type: ignore[method-assign]
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def official_step(args: argparse.Namespace) -> Callable[[torch.Tensor, torch.Tensor], float]:
    code = args.csd_code / "PyTorch version"
    if not (code / "model" / "edsr.py").is_file() or not (code / "loss" / "contrast_loss.py").is_file():
        raise SystemExit(
            f"--csd-code {args.csd_code}: no 'PyTorch version/model/edsr.py' or loss/contrast_loss.py"
        )
    sys.path.insert(0, str(code))
    with _stubs():
        from loss.contrast_loss import ContrastLoss  # the checkout's, unmodified
        from model.edsr import EDSR

        ns = types.SimpleNamespace(n_colors=3, n_resblocks=args.n_resblocks, n_feats=args.n_feats,
                                   scale=[args.scale], rgb_range=255, res_scale=1.0)  # fmt: skip
        torch.manual_seed(0)
        model = EDSR(ns)
        # --contrast_t_detach, as the official README's training command passes it (and as edgesr does)
        contrast = ContrastLoss(list(_recipe(args).train.csd.layer_weights), "L1", True)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    up = nn.Upsample(scale_factor=args.scale, mode="bicubic")

    def step(lr: torch.Tensor, hr: torch.Tensor) -> float:
        lr, hr = lr * 255, hr * 255
        opt.zero_grad()
        teacher_sr = model(lr)
        student_sr = model(lr, args.width)
        l1, t_l1 = F.l1_loss(hr, student_sr), F.l1_loss(hr, teacher_sr)
        negatives = up(lr[torch.randperm(args.negatives)])
        loss = l1 + 1.0 * contrast(teacher_sr, student_sr, negatives) + 1.0 * t_l1
        loss.backward()
        opt.step()
        return loss.item()

    return step


def _recipe(args: argparse.Namespace):  # -> Recipe: the one configuration both sides run
    from edgesr.recipe import load_recipe, resolve_recipe

    overrides = [
        f"scale={args.scale}", f"model.args.n_resblocks={args.n_resblocks}",
        f"model.args.n_feats={args.n_feats}", f"train.widths=[{args.width}]", "train.init=null",
        f"train.csd.negatives={args.negatives}", "train.csd.lambda_cl=1.0", "train.csd.lambda_teacher=1.0",
    ]  # fmt: skip
    return load_recipe(resolve_recipe("csd_edsr_x2_w025"), overrides)


def edgesr_step(args: argparse.Namespace) -> Callable[[torch.Tensor, torch.Tensor], float]:
    from edgesr.train.modes import build_objective

    torch.manual_seed(0)
    objective, _ = build_objective(_recipe(args))
    objective.train()
    opt = torch.optim.Adam([p for p in objective.parameters() if p.requires_grad], lr=1e-4)
    count = [0]

    def step(lr: torch.Tensor, hr: torch.Tensor) -> float:
        count[0] += 1
        loss, _ = objective(lr, hr, count[0])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def run(args: argparse.Namespace) -> int:
    from benchmarks.export_latency import cpu_name

    if args.batch < args.negatives:
        raise SystemExit(f"--batch {args.batch} < --negatives {args.negatives}: the official code draws "
                         "its negatives from the batch")  # fmt: skip
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    hr_side = args.patch * args.scale
    batches = [(torch.rand(args.batch, 3, args.patch, args.patch, generator=g),
                torch.rand(args.batch, 3, hr_side, hr_side, generator=g)) for _ in range(4)]  # fmt: skip
    sides = {"official": official_step(args), "edgesr": edgesr_step(args)}
    for fn in sides.values():  # warm-up: first calls allocate
        fn(*batches[0])
    rates: dict[str, list[float]] = {k: [] for k in sides}
    for r in range(args.rounds):
        for name in sorted(sides, reverse=bool(r % 2)):
            t0 = time.perf_counter()
            for i in range(args.steps):
                sides[name](*batches[i % len(batches)])
            rates[name].append(args.steps / (time.perf_counter() - t0))
    off, ours = statistics.median(rates["official"]), statistics.median(rates["edgesr"])
    print(
        f"CSD step, EDSR {args.n_resblocks}x{args.n_feats} x{args.scale} at width {args.width}, batch "
        f"{args.batch}, LR patch {args.patch}, {args.negatives} negatives, VGG19 5 layers; {args.threads} "
        f"threads, {args.rounds} interleaved rounds of {args.steps} steps; torch {torch.__version__}; "
        f"{cpu_name()}"
    )
    print(
        f"official CSD code: {off:.3f} steps/s  (rounds: {', '.join(f'{v:.3f}' for v in rates['official'])})"
    )
    print(
        f"edgesr:            {ours:.3f} steps/s  (rounds: {', '.join(f'{v:.3f}' for v in rates['edgesr'])})"
    )
    print(f"edgesr / official: {ours / off:.2f}x")
    return 0
