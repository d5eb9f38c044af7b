"""Frozen VGG19 feature embedding for the CSD contrastive loss.

Layer layout: `VGG19Features.features` reproduces torchvision's `vgg19().features` index for index
(convs at 0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34; ReLU / MaxPool between), so a
torchvision state dict loads unchanged. Taps by name: relu1_1 (index 1), relu2_1 (6), relu3_1 (11),
relu4_1 (20), relu5_1 (29). The module keeps only the layers up to the deepest requested tap:
asking for relu1_1 alone builds and runs a single conv.

Weights: the CSD paper (Wang et al., IJCAI 2021) uses ImageNet-trained VGG19 weights. They cannot
be downloaded here, so without a weights file the embedding is a *seeded random* VGG19
(torch.Generator seed 0, Kaiming-normal fan_out conv init as torchvision does, zero bias).
Random conv features are a known texture-sensitive perceptual embedding, so CL still measures
something meaningful, but results are not comparable to the paper's. To use the paper's
embedding, save torchvision's weights on a machine with network access:

    torch.save(torchvision.models.vgg19(weights="IMAGENET1K_V1").state_dict(), "vgg19.pth")

and point the recipe key `train.csd.vgg_weights` at the file (`.pth`/`.pt` or `.safetensors`;
full-model keys `features.N.weight` with `classifier.*` ignored, or bare `N.weight`).

Input scaling: SR tensors in edgesr are RGB in [0, 1]. The official CSD code feeds VGG 0..255
values with no ImageNet normalisation, and lambda_CL = 200 was tuned for that scale, hence the
defaults `input_scale=255.0, normalize=False`. With `normalize=True` the [0, 1] input first gets
torchvision's ImageNet mean/std normalisation (what ImageNet weights expect in torchvision) and is
then multiplied by `input_scale`; use `input_scale=1.0` with it, and re-tune lambda_CL.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from edgesr.models.official import torch_load_safely

# torchvision's VGG19 config "E": channel counts, "M" = 2x2 max-pool.
_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
)  # fmt: skip

TAPS: dict[str, int] = {"relu1_1": 1, "relu2_1": 6, "relu3_1": 11, "relu4_1": 20, "relu5_1": 29}
DEFAULT_SEED = 0
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _conv_shapes() -> dict[int, tuple[int, int]]:
    """Conv index in `features` -> (in_channels, out_channels), torchvision numbering."""
    shapes: dict[int, tuple[int, int]] = {}
    idx, c_in = 0, 3
    for v in _CFG:
        if v == "M":
            idx += 1
        else:
            assert isinstance(v, int)
            shapes[idx] = (c_in, v)
            c_in = v
            idx += 2  # conv, relu
    return shapes


CONV_SHAPES = _conv_shapes()  # {0: (3, 64), 2: (64, 64), 5: (64, 128), ..., 34: (512, 512)}


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Bare state-dict keys (`N.weight`, `N.bias`) of a full VGG19 `features` and their shapes."""
    out: dict[str, tuple[int, ...]] = {}
    for idx, (c_in, c_out) in CONV_SHAPES.items():
        out[f"{idx}.weight"] = (c_out, c_in, 3, 3)
        out[f"{idx}.bias"] = (c_out,)
    return out


def build_vgg19_layers(depth: int | None = None, seed: int = DEFAULT_SEED) -> nn.Sequential:
    """torchvision-layout VGG19 `features` truncated to the first `depth` layers (None: all 37).

    Convs are Kaiming-normal (fan_out, relu) from a private generator seeded with `seed`, biases
    zero. Layers are initialised in order from one generator, so a truncated stack has exactly the
    leading weights of the full one; the global RNG is never touched.
    """
    g = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    c_in = 3
    for v in _CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        assert isinstance(v, int)
        conv = nn.utils.skip_init(nn.Conv2d, c_in, v, kernel_size=3, padding=1)
        with torch.no_grad():
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu", generator=g)
            nn.init.zeros_(conv.bias)
        layers += [conv, nn.ReLU(inplace=False)]
        c_in = v
    return nn.Sequential(*layers[: len(layers) if depth is None else depth])


def load_vgg19_weights(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read VGG19 conv weights from `.pth`/`.pt` or `.safetensors`; return bare `N.weight` keys.

    Accepts a torchvision full-model state dict (`features.N.*`; `classifier.*` dropped) or a bare
    `features` state dict (`N.*`). Raises ValueError naming the file and the key when a conv key
    is missing or extra, or a shape does not match VGG19.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        raw: object = load_file(str(path))
    elif path.suffix in (".pth", ".pt"):
        raw = torch_load_safely(path, "VGG19 weights")
    else:
        raise ValueError(
            f"{path}: unsupported VGG19 weights format {path.suffix!r} (use .pth, .pt, .safetensors)"
        )
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path}: expected a state dict, got {type(raw).__name__}")
    return vgg19_state_from_mapping(raw, source=str(path))


def vgg19_state_from_mapping(raw: Mapping[str, object], source: str = "<state dict>") -> dict[str, Tensor]:
    """Validate a VGG19 state dict (either key style) and return it with bare `N.weight` keys.

    `source` names the file in error messages.
    """
    state: dict[str, Tensor] = {}
    for key, value in raw.items():
        if key.startswith("classifier."):
            continue
        bare = key.removeprefix("features.")
        if not isinstance(value, Tensor):
            raise ValueError(f"{source}: key {key!r} is not a tensor")
        state[bare] = value

    expected = expected_shapes()
    for key in state:
        if key not in expected:
            raise ValueError(f"{source}: unexpected key {key!r} for VGG19 features")
    for key, shape in expected.items():
        if key not in state:
            raise ValueError(f"{source}: missing VGG19 key {key!r} (or 'features.{key}')")
        if tuple(state[key].shape) != shape:
            raise ValueError(
                f"{source}: key {key!r} has shape {tuple(state[key].shape)}, VGG19 expects {shape}"
            )
    return state


class VGG19Features(nn.Module):
    """Frozen VGG19 returning the requested ReLU taps, shallowest first.

    forward(x: B x 3 x H x W, RGB in [0, 1]) -> list of B x C_j x H_j x W_j, one per tap in
    `layers` order. Gradients flow to `x` (the student needs them) but never to the weights.
    """

    def __init__(
        self,
        layers: Sequence[str] = tuple(TAPS),
        weights: str | os.PathLike[str] | Mapping[str, Tensor] | None = None,
        input_scale: float = 255.0,
        normalize: bool = False,
        seed: int = DEFAULT_SEED,
    ) -> None:
        super().__init__()
        if not layers:
            raise ValueError(f"VGG19Features needs at least one tap; valid: {', '.join(TAPS)}")
        for name in layers:
            if name not in TAPS:
                raise ValueError(f"unknown VGG19 tap {name!r}; valid: {', '.join(TAPS)}")
        self.layers = tuple(layers)
        self.input_scale = float(input_scale)
        self.normalize = normalize
        depth = max(TAPS[n] for n in self.layers) + 1
        self.features = build_vgg19_layers(depth, seed=seed)
        if weights is not None:
            if isinstance(weights, Mapping):
                state = vgg19_state_from_mapping(weights)
            else:
                state = load_vgg19_weights(weights)
            # Only the kept layers' weights; deeper ones are validated by the loader but unused.
            keep = {k: v for k, v in state.items() if int(k.split(".")[0]) < depth}
            self.features.load_state_dict(keep, strict=True)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> VGG19Features:
        # A frozen embedding: a parent's .train() must not flip it (or future BN/dropout) on.
        return super().train(False)

    def forward(self, x: Tensor) -> list[Tensor]:
        if self.normalize:
            x = (x - self.mean) / self.std
        x = x * self.input_scale
        by_index = {TAPS[n]: n for n in self.layers}
        found: dict[str, Tensor] = {}
        for idx, layer in enumerate(self.features):
            x = layer(x)
            if idx in by_index:
                found[by_index[idx]] = x
        return [found[n] for n in self.layers]
