"""Official EDSR / RCAN checkpoints: key mapping, 0..255 -> 0..1 rescaling, inference, conversion.

The reference networks below re-implement the official modules (EDSR-PyTorch ``src/model/edsr.py``,
``common.py``; RCAN ``RCAN_TrainCode/code/model/rcan.py``) with the same module nesting, so their
``state_dict()`` has the official keys, and run on 0..255 inputs as the official code does.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from edgesr.models import official
from edgesr.models.official import is_official_checkpoint, load_official
from edgesr.train.checkpoint import convert_official, load_model

DIV2K_MEAN = (0.4488, 0.4371, 0.4040)


# --- the official modules ----------------------------------------------------------------------


def default_conv(cin: int, cout: int, k: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2, bias=True)


class MeanShift(nn.Conv2d):
    def __init__(self, rgb_range: float, sign: int) -> None:
        super().__init__(3, 3, kernel_size=1)
        self.weight.data = torch.eye(3).view(3, 3, 1, 1)
        self.bias.data = sign * rgb_range * torch.tensor(DIV2K_MEAN)
        for p in self.parameters():
            p.requires_grad = False


class Upsampler(nn.Sequential):
    def __init__(self, scale: int, n_feats: int) -> None:
        m: list[nn.Module] = []
        if scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                m += [default_conv(n_feats, 4 * n_feats, 3), nn.PixelShuffle(2)]
        else:
            m += [default_conv(n_feats, 9 * n_feats, 3), nn.PixelShuffle(3)]
        super().__init__(*m)


class ResBlock(nn.Module):
    def __init__(self, n_feats: int, res_scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            default_conv(n_feats, n_feats, 3), nn.ReLU(True), default_conv(n_feats, n_feats, 3)
        )
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x).mul(self.res_scale) + x


class CALayer(nn.Module):
    def __init__(self, channel: int, reduction: int) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(
            nn.Conv2d(channel, channel // reduction, 1, padding=0, bias=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(channel // reduction, channel, 1, padding=0, bias=True),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.conv_du(self.avg_pool(x))


class RCAB(nn.Module):
    def __init__(self, n_feats: int, reduction: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            default_conv(n_feats, n_feats, 3),
            nn.ReLU(True),
            default_conv(n_feats, n_feats, 3),
            CALayer(n_feats, reduction),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + x


class ResidualGroup(nn.Module):
    def __init__(self, n_feats: int, reduction: int, n_resblocks: int) -> None:
        super().__init__()
        blocks: list[nn.Module] = [RCAB(n_feats, reduction) for _ in range(n_resblocks)]
        self.body = nn.Sequential(*blocks, default_conv(n_feats, n_feats, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + x


class OfficialSR(nn.Module):
    """Official EDSR (``n_resgroups=None``) or RCAN; inputs and outputs in [0, rgb_range]."""

    def __init__(
        self,
        scale: int,
        n_feats: int = 16,
        n_resblocks: int = 2,
        n_resgroups: int | None = None,
        reduction: int = 4,
        res_scale: float = 1.0,
        rgb_range: float = 255.0,
    ) -> None:
        super().__init__()
        F = n_feats
        self.sub_mean = MeanShift(rgb_range, -1)
        self.head = nn.Sequential(default_conv(3, F, 3))
        if n_resgroups is None:
            body: list[nn.Module] = [ResBlock(F, res_scale) for _ in range(n_resblocks)]
        else:
            body = [ResidualGroup(F, reduction, n_resblocks) for _ in range(n_resgroups)]
        self.body = nn.Sequential(*body, default_conv(F, F, 3))
        self.tail = nn.Sequential(Upsampler(scale, F), default_conv(F, 3, 3))
        self.add_mean = MeanShift(rgb_range, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.head(self.sub_mean(x))
        res = self.body(x) + x
        return self.add_mean(self.tail(res))


def official_model(arch: str, scale: int, seed: int = 0, **kw: float) -> OfficialSR:
    torch.manual_seed(seed)
    model = OfficialSR(scale, n_resgroups=2 if arch == "rcan" else None, **kw).eval()
    # Biases large next to 0..255 features: a missing or wrong bias rescale must show in the output.
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, nn.Conv2d) and "mean" not in name:
                module.bias.uniform_(-10.0, 10.0)
    return model


def image(seed: int = 1) -> Tensor:
    return torch.rand(2, 3, 12, 10, generator=torch.Generator().manual_seed(seed))  # [0, 1]


def assert_parity(model: nn.Module, ref: OfficialSR, R: float = 255.0) -> None:
    x = image()
    with torch.no_grad():
        expected = ref(x * R)
        got = model(x) * R
    assert expected.abs().max() > 1.0  # not a degenerate all-zero network
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-3)


def save(state: dict[str, Tensor], path: Path, wrap: str = "plain") -> Path:
    if wrap == "plain":
        torch.save(state, path)
    elif wrap == "state_dict+module":
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    elif wrap == "model+model.module":
        torch.save({"model": {f"model.module.{k}": v for k, v in state.items()}}, path)
    elif wrap == "legacy":
        torch.save(state, path, _use_new_zipfile_serialization=False)
    elif wrap == "safetensors":
        path = path.with_suffix(".safetensors")
        save_file({k: v.contiguous() for k, v in state.items()}, path)
    else:
        raise AssertionError(wrap)
    return path


# --- parity ------------------------------------------------------------------------------------


CASES = [("edsr", 2), ("edsr", 3), ("edsr", 4), ("rcan", 2), ("rcan", 4)]


@pytest.mark.parametrize(("arch", "scale"), CASES)
def test_parity_with_official_on_0_255(tmp_path: Path, arch: str, scale: int) -> None:
    ref = official_model(arch, scale)
    path = save(ref.state_dict(), tmp_path / "model_best.pt")
    model, info = load_official(path)
    assert info["arch"] == arch and info["source"] == str(path) and info["rgb_range"] == 255.0
    assert info["ignored_keys"] == sorted(official._MEAN_SHIFT)
    assert_parity(model.eval(), ref)


@pytest.mark.parametrize("wrap", ["state_dict+module", "model+model.module", "legacy", "safetensors"])
def test_containers_prefixes_and_file_formats(tmp_path: Path, wrap: str) -> None:
    ref = official_model("rcan", 4)
    model, info = load_official(save(ref.state_dict(), tmp_path / "RCAN_BIX4.pt", wrap))
    assert info["args"]["scale"] == 4 and info["args"]["n_resgroups"] == 2
    assert_parity(model.eval(), ref)


def test_res_scale_argument(tmp_path: Path) -> None:
    ref = official_model("edsr", 2, res_scale=0.1)
    path = save(ref.state_dict(), tmp_path / "edsr.pt")
    model, info = load_official(path, res_scale=0.1)
    assert info["args"]["res_scale"] == 0.1
    assert_parity(model, ref)


def test_checkpoint_without_mean_shift_keys_assumes_255(tmp_path: Path) -> None:
    ref = official_model("rcan", 2)
    state = {k: v for k, v in ref.state_dict().items() if "mean" not in k}
    model, info = load_official(save(state, tmp_path / "rcan.pt"))
    assert info["rgb_range"] == 255.0 and info["ignored_keys"] == []
    assert_parity(model, ref)


def test_rgb_range_read_from_mean_shift(tmp_path: Path) -> None:
    ref = official_model("rcan", 2, rgb_range=1.0)
    model, info = load_official(save(ref.state_dict(), tmp_path / "rcan.pt"))
    assert info["rgb_range"] == 1.0
    assert_parity(model, ref, R=1.0)
    with pytest.raises(ValueError, match="rgb_range=255"):
        load_official(tmp_path / "rcan.pt", rgb_range=255)


@pytest.mark.parametrize(
    ("arch", "broken"),
    [
        ("edsr", lambda key, v: v),  # no rescale at all: biases must be divided by 255
        ("rcan", lambda key, v: v / 255 if key.endswith(".bias") else v),  # naive: every bias / 255
    ],
)
def test_control_wrong_rescale_breaks_parity(tmp_path: Path, monkeypatch, arch: str, broken) -> None:
    """The parity test is strong enough to catch the plausible rescaling mistakes."""
    ref = official_model(arch, 2)
    path = save(ref.state_dict(), tmp_path / "m.pt")
    monkeypatch.setattr(official, "_rescale", lambda key, v, R: broken(key, v))
    model, _ = load_official(path)
    with pytest.raises(AssertionError):
        assert_parity(model, ref)


# --- inference and errors ----------------------------------------------------------------------


def test_infers_architecture_from_keys(tmp_path: Path) -> None:
    ref = OfficialSR(4, n_feats=16, n_resblocks=3, n_resgroups=2, reduction=8)
    _, info = load_official(save(ref.state_dict(), tmp_path / "rcan.pt"))
    assert info["arch"] == "rcan"
    assert info["args"] == dict(
        scale=4, n_resgroups=2, n_resblocks=3, n_feats=16, reduction=8, res_scale=1.0,
        rgb_range=1.0, width_multiple=8,
    )  # fmt: skip
    ref = OfficialSR(3, n_feats=24, n_resblocks=3)
    _, info = load_official(save(ref.state_dict(), tmp_path / "edsr.pt"), arch="edsr", scale=3)
    assert info["arch"] == "edsr"
    assert info["args"] == dict(
        scale=3, n_resblocks=3, n_feats=24, res_scale=1.0, rgb_range=1.0, width_multiple=8
    )


def test_full_edsr_defaults_to_res_scale_0_1(tmp_path: Path) -> None:
    ref = OfficialSR(2, n_feats=256, n_resblocks=1, res_scale=0.1)
    _, info = load_official(save(ref.state_dict(), tmp_path / "edsr_x2.pt"))
    assert info["args"]["n_feats"] == 256 and info["args"]["res_scale"] == 0.1


def test_inconsistent_arch_or_scale_raises(tmp_path: Path) -> None:
    path = save(official_model("edsr", 4).state_dict(), tmp_path / "edsr.pt")
    with pytest.raises(ValueError, match=r"scale=2 given .* x4"):
        load_official(path, scale=2)
    with pytest.raises(ValueError, match="arch='rcan'"):
        load_official(path, arch="rcan")


@pytest.mark.parametrize(
    ("arch", "old", "new"),
    [
        ("edsr", "body.1.body.2.weight", "body.1.body.3.weight"),
        ("edsr", "body.0.body.0.weight", "body.0.body.1.weight"),  # depth still inferred as 2
        ("rcan", "body.1.body.0.body.0.bias", "body.1.body.0.body.0.b"),
        ("rcan", "body.0.body.1.body.3.conv_du.2.bias", "body.0.body.1.body.3.conv_du.4.bias"),
        ("edsr", "tail.0.0.bias", "tail.0.1.bias"),
    ],
)
def test_renamed_key_raises_naming_it(tmp_path: Path, arch: str, old: str, new: str) -> None:
    state = official_model(arch, 2).state_dict()
    state[new] = state.pop(old)
    path = save(state, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="bad.pt") as err:
        load_official(path)
    assert new in str(err.value) and old in str(err.value)


def test_wrong_shape_raises_naming_key(tmp_path: Path) -> None:
    state = official_model("rcan", 2).state_dict()
    state["body.1.body.0.body.0.bias"] = torch.zeros(15)
    with pytest.raises(ValueError, match=r"'body.1.body.0.body.0.bias' has shape \(15,\)"):
        load_official(save(state, tmp_path / "rcan.pt"))


def test_unreadable_and_foreign_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        load_official(junk)
    assert not is_official_checkpoint(junk)
    other = save({"conv_first.weight": torch.zeros(1)}, tmp_path / "basicsr.pt")
    with pytest.raises(ValueError, match="head.0.weight"):
        load_official(other)
    assert not is_official_checkpoint(other)


# --- conversion and use as a CSD teacher -------------------------------------------------------


def test_convert_official_reloads_with_load_model(tmp_path: Path) -> None:
    ref = official_model("rcan", 4)
    src = save(ref.state_dict(), tmp_path / "RCAN_BIX4.pt")
    assert is_official_checkpoint(src)
    written = convert_official(src, tmp_path / "teacher")
    model, meta = load_model(tmp_path / "teacher")
    assert meta.arch["name"] == "rcan" and meta.scale == 4 and meta.step == 0
    assert meta.widths == (1.0,) and meta.materialized_width is None and meta.recipe_hash == "official"
    assert_parity(model.eval(), ref)
    # edgesr's own checkpoints are not official ones, and load_official refuses them.
    assert not is_official_checkpoint(written / "model.safetensors")
    assert not is_official_checkpoint(written)
    with pytest.raises(ValueError, match="edgesr checkpoint"):
        load_official(written / "model.safetensors")


@pytest.mark.parametrize("arch", ["edsr", "rcan"])
def test_channel_split_student_of_loaded_teacher_runs(tmp_path: Path, arch: str) -> None:
    model, _ = load_official(save(official_model(arch, 2).state_dict(), tmp_path / "m.pt"))
    with torch.no_grad():
        y = model(image(), width=0.5)
    assert y.shape == (2, 3, 24, 20) and torch.isfinite(y).all()
