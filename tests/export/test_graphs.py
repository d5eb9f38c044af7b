"""Upsampler rewrites: every variant computes exactly what the PixelShuffle model does, on every model."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgesr.export.graphs import DepthToSpace, crd_to_dcr, one_hot_transposed_conv, rewrite_upsampler
from edgesr.models import MODELS, build_model, materialize
from edgesr.targets import UPSAMPLERS

TINY: dict[str, dict[str, int]] = {
    "edsr": {"n_resblocks": 1, "n_feats": 16},
    "edsr_baseline": {"n_resblocks": 1, "n_feats": 16},
    "edsr_full": {"n_resblocks": 1, "n_feats": 16},
    "rcan": {"n_resgroups": 1, "n_resblocks": 1, "n_feats": 16, "reduction": 4},
    "plain": {"n_convs": 3, "n_feats": 8},
    "quicksrnet": {"n_intermediate": 1, "n_feats": 8},
    "quicksrnet_small": {"n_intermediate": 1, "n_feats": 8},
    "quicksrnet_medium": {"n_intermediate": 1, "n_feats": 8},
    "quicksrnet_large": {"n_intermediate": 1, "n_feats": 8},
    "xlsr": {"n_gblocks": 1, "n_feats": 8},
    "ecbsr": {"n_convs": 3, "n_feats": 8},
}
REWRITES = [v for v in UPSAMPLERS if v != "pixelshuffle"]


def tiny(name: str, scale: int, **extra: object) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(name, scale=scale, **TINY[name], **extra).eval()
    with torch.no_grad():  # non-zero biases, so a bias left in CRD order would show
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.uniform_(-0.5, 0.5)
    return model


def test_every_registered_model_has_tiny_args():
    assert set(MODELS.names()) <= set(TINY), "add the new model to TINY so its rewrites are tested"


@pytest.mark.parametrize("variant", REWRITES)
@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("name", MODELS.names())
def test_rewrite_equals_pixelshuffle_model(name, scale, variant):
    model = tiny(name, scale)
    before = copy.deepcopy(model.state_dict())
    rewritten = rewrite_upsampler(model, variant)
    x = torch.rand(1, 3, 11, 7)
    with torch.no_grad():
        torch.testing.assert_close(rewritten(x), model(x), rtol=1e-6, atol=1e-6)
    assert not any(isinstance(m, nn.PixelShuffle) for m in rewritten.modules())
    expected = DepthToSpace if variant == "depth_to_space" else nn.ConvTranspose2d
    # one rewritten upsampler per shuffle (EDSR and RCAN have two x2 stages at x4)
    assert sum(isinstance(m, expected) for m in rewritten.modules()) == sum(
        isinstance(m, nn.PixelShuffle) for m in model.modules()
    )
    assert rewritten.scale == scale and rewritten.arch == model.arch
    for key, value in model.state_dict().items():  # the original is untouched
        assert torch.equal(value, before[key])


@pytest.mark.parametrize("variant", REWRITES)
def test_materialized_student_keeps_its_attributes(variant):
    student = materialize(tiny("edsr", 4), 0.5)
    rewritten = rewrite_upsampler(student, variant)
    assert rewritten.materialized_width == 0.5 and rewritten.arch == student.arch and rewritten.scale == 4
    x = torch.rand(1, 3, 9, 10)
    with torch.no_grad():
        torch.testing.assert_close(rewritten(x), student(x), rtol=1e-6, atol=1e-6)


def test_plain_nearest_conv_is_reordered_with_the_last_conv():
    model = tiny("plain", 3, clamp=True)
    rewritten = rewrite_upsampler(model, "depth_to_space")
    perm = crd_to_dcr(27, 3)
    torch.testing.assert_close(rewritten.nearest.weight, model.nearest.weight[perm])
    torch.testing.assert_close(rewritten.last.bias, model.last.bias[perm])
    assert not rewritten.nearest.weight.requires_grad and rewritten.last.weight.requires_grad


@pytest.mark.parametrize("r", [1, 2, 3])
def test_depth_to_space_is_pixel_shuffle_after_the_channel_permutation(r):
    x = torch.rand(2, 5 * r * r, 4, 6)
    torch.testing.assert_close(DepthToSpace(r)(x[:, crd_to_dcr(x.shape[1], r)]), F.pixel_shuffle(x, r))
    if r > 1:  # and the permutation matters
        assert not torch.equal(DepthToSpace(r)(x), F.pixel_shuffle(x, r))


@pytest.mark.parametrize("r", [2, 3])
def test_one_hot_transposed_conv_is_pixel_shuffle(r):
    conv = one_hot_transposed_conv(4, r)
    x = torch.randn(1, 4 * r * r, 5, 3)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), F.pixel_shuffle(x, r), rtol=0, atol=0)
    assert not conv.weight.requires_grad and conv.bias is None and int(conv.weight.sum()) == 4 * r * r


def test_unknown_variant_lists_the_variants():
    with pytest.raises(ValueError, match="pixelshuffle, depth_to_space, transposed_conv"):
        rewrite_upsampler(tiny("plain", 2), "subpixel")


def test_pixelshuffle_variant_is_the_model_itself():
    model = tiny("plain", 2)
    assert rewrite_upsampler(model, "pixelshuffle") is model


@pytest.mark.parametrize("variant", REWRITES)
def test_model_without_pixelshuffle_is_an_error(variant):
    with pytest.raises(ValueError, match="no nn.PixelShuffle"):
        rewrite_upsampler(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1)), variant)


class RepeatAnchor(nn.Module):
    """A shuffle fed by `repeat` (not a conv): depth_to_space cannot reorder it, transposed_conv can."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        self.up = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.conv(x) + x.repeat(1, 4, 1, 1))


def test_shuffle_not_fed_by_convs_names_the_module():
    model = RepeatAnchor().eval()
    with pytest.raises(ValueError, match=r"PixelShuffle 'up'.*Repeat.*transposed_conv"):
        rewrite_upsampler(model, "depth_to_space")
    x = torch.rand(1, 3, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(rewrite_upsampler(model, "transposed_conv")(x), model(x))


class SharedConv(nn.Module):
    """The conv before the shuffle also feeds another branch: reordering it would change that branch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        self.up = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.up(y) + y[:, :3].mean()


def test_conv_used_elsewhere_is_caught_by_the_output_check():
    with pytest.raises(RuntimeError, match="changed its output"):
        rewrite_upsampler(SharedConv().eval(), "depth_to_space")


def test_rewritten_full_model_refuses_narrower_widths():
    """Reordered convs are plain convs: a narrower width fails loudly instead of slicing wrong channels."""
    rewritten = rewrite_upsampler(tiny("edsr", 2), "depth_to_space")
    with pytest.raises(RuntimeError):
        rewritten(torch.rand(1, 3, 8, 8), width=0.5)


@pytest.mark.parametrize(
    "variant, op, mode",
    [("pixelshuffle", "DepthToSpace", "CRD"), ("depth_to_space", "DepthToSpace", "DCR"),
     ("transposed_conv", "ConvTranspose", None)],
)  # fmt: skip
def test_onnx_graph_of_each_variant(tmp_path, variant, op, mode):
    """What torch.onnx (TorchScript front end) emits per variant, run on ONNX Runtime at a new size."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from edgesr.export import ExportOptions, get_exporter, plan_export
    from edgesr.export.run import deployable

    model = deployable(tiny("edsr", 4), variant)
    exporter = get_exporter("onnx")
    request = plan_export("onnx", ExportOptions(input_shape=(1, 3, 8, 12), dynamic=True))
    path = tmp_path / "m.onnx"
    exporter.export(model, torch.rand(1, 3, 8, 12), path, request)
    nodes = [n for n in onnx.load(str(path)).graph.node if n.op_type == op]
    assert len(nodes) == 2  # two x2 stages
    modes = {a.s.decode() for n in nodes for a in n.attribute if a.name == "mode"}
    assert modes == ({mode} if mode else set())
    assert not {"Transpose", "Reshape"} & set(exporter.delegation(path)["ops"])
    x = torch.rand(1, 3, 10, 6)
    with torch.no_grad():
        want = model(x).numpy()
    got = exporter.load(path, threads=1)(x.numpy())
    assert abs(got - want).max() < 1e-4


def test_export_checkpoint_with_depth_to_space(tmp_path):
    pytest.importorskip("onnxruntime")
    from edgesr.export import ExportRequest, export_checkpoint
    from edgesr.train.checkpoint import CheckpointMeta, save_checkpoint

    model = tiny("plain", 3, clamp=True)
    save_checkpoint(tmp_path / "ckpt", model, CheckpointMeta(model.arch, 3, (1.0,), None, "r", 1), None)
    request = ExportRequest(
        tmp_path / "ckpt", "onnx", input_shape=(1, 3, 16, 24), out_dir=tmp_path, upsampler="depth_to_space"
    )
    result = export_checkpoint(request)
    assert result.verification.passed and result.verification.max_abs_diff < 1e-4
    assert result.manifest["graph"]["upsampler"] == "depth_to_space"
    assert result.manifest["delegation"]["ops"].get("DepthToSpace") == 1


def test_depth_to_space_rejects_channels_that_do_not_split():
    with pytest.raises(ValueError, match="not a multiple of r\\*r"):
        DepthToSpace(2)(torch.rand(1, 6, 4, 4))
