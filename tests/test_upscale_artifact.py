"""`edgesr upscale --artifact`: an exported artifact, tiled at its fixed input, matches the checkpoint."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnxruntime", reason='ONNX Runtime not installed (pip install "edgesr[onnx]")')

from edgesr.cli import main  # noqa: E402
from edgesr.export import ExportRequest, export_checkpoint, get_exporter  # noqa: E402
from edgesr.models import build_model  # noqa: E402
from edgesr.train.checkpoint import CheckpointMeta, save_checkpoint  # noqa: E402
from edgesr.upscale import artifact_upscaler, spans, upscale_tiled  # noqa: E402

INPUT = (1, 3, 24, 32)  # the artifact's fixed LR input
# Receptive field radius of the tiny EDSR below, LR pixels: head + 2 block convs + body_end +
# upsampler conv (5) + the tail conv at HR (1 HR pixel = 0.5 LR), rounded up.
RF = 6
OVERLAP = 8  # >= RF, so tiling is exact


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("artifact")
    torch.manual_seed(0)
    model = build_model("edsr", scale=2, n_resblocks=1, n_feats=16)
    save_checkpoint(root / "ckpt", model, CheckpointMeta(model.arch, 2, (1.0, 0.5), None, "r", 1), None)
    fixed = export_checkpoint(ExportRequest(root / "ckpt", "onnx", input_shape=INPUT, out_dir=root))
    dynamic = export_checkpoint(
        ExportRequest(root / "ckpt", "onnx", input_shape=INPUT, dynamic=True, out_dir=root)
    )
    return {"ckpt": root / "ckpt", "fixed": fixed.artifact, "dynamic": dynamic.artifact, "root": root}


def image(tmp_path, h: int, w: int):
    path = tmp_path / f"lr_{h}x{w}.png"
    Image.fromarray((np.random.default_rng(h * w).random((h, w, 3)) * 255).astype(np.uint8)).save(path)
    return path


def upscale(*argv: str) -> np.ndarray:
    assert main(["upscale", *argv]) == 0
    return np.asarray(Image.open(argv[argv.index("--out") + 1])).astype(np.int16)


@pytest.mark.parametrize("kind", ["fixed", "dynamic"])
def test_artifact_equals_checkpoint_on_a_larger_image(exported, tmp_path, kind):
    img = image(tmp_path, 50, 77)
    ov = ["--overlap", str(OVERLAP), "--tile", "16"]
    got = upscale(str(img), "--artifact", str(exported[kind]), "--out", str(tmp_path / "a.png"), *ov)
    want = upscale(str(img), "--checkpoint", str(exported["ckpt"]), "--out", str(tmp_path / "c.png"), *ov)
    assert got.shape == want.shape == (100, 154, 3)
    assert np.abs(got - want).max() <= 1  # float rounding at the uint8 step only


def test_fixed_artifact_sees_only_its_input_shape(exported):
    up = artifact_upscaler(exported["fixed"], threads=1)
    seen: list[tuple[int, ...]] = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(x.shape))
        return up.fn(x)

    lr = torch.rand(1, 3, 50, 77)
    out = upscale_tiled(fn, lr, up.scale, overlap=OVERLAP, input_hw=up.input_hw)
    assert set(seen) == {INPUT} and len(seen) > 1 and up.input_hw == INPUT[2:]
    whole = get_exporter("onnx").load(exported["dynamic"])(lr.numpy())  # one whole-image forward
    np.testing.assert_allclose(out.numpy(), whole, atol=1e-4)
    # Not vacuous: without context the tiles disagree with the whole-image forward at their seams.
    seams = upscale_tiled(up.fn, lr, up.scale, overlap=0, input_hw=up.input_hw)
    assert np.abs(seams.numpy() - whole).max() > 1e-2


@pytest.mark.parametrize("hw", [(10, 13), (16, 70), (24, 32)])
def test_images_smaller_than_the_input_are_mirror_padded(exported, tmp_path, hw):
    img = image(tmp_path, *hw)
    ov = ["--overlap", str(OVERLAP)]
    got = upscale(str(img), "--artifact", str(exported["fixed"]), "--out", str(tmp_path / "a.png"), *ov)
    want = upscale(str(img), "--checkpoint", str(exported["ckpt"]), "--out", str(tmp_path / "c.png"), *ov)
    assert got.shape == want.shape == (2 * hw[0], 2 * hw[1], 3)
    # Exact except within the receptive field of a padded bottom/right edge.
    h = 2 * (hw[0] - RF) if hw[0] < INPUT[2] else 2 * hw[0]
    w = 2 * (hw[1] - RF) if hw[1] < INPUT[3] else 2 * hw[1]
    assert np.abs(got[:h, :w] - want[:h, :w]).max() <= 1


@pytest.mark.parametrize("size, window, overlap", [(50, 24, 8), (24, 24, 4), (97, 32, 0), (33, 32, 15)])
def test_fixed_windows_cover_the_image_with_context(size, window, overlap):
    s = spans(size, tile=999, overlap=overlap, window=window)
    assert [x.start for x in s] == [0] + [x.stop for x in s[:-1]] and s[-1].stop == size
    for x in s:
        assert x.hi - x.lo == window and 0 <= x.lo <= x.start < x.stop <= x.hi <= size
        assert x.start - x.lo >= overlap or x.lo == 0
        assert x.hi - x.stop >= overlap or x.hi == size


def test_overlap_too_large_for_the_input(exported, tmp_path):
    img = image(tmp_path, 50, 77)
    argv = ["upscale", str(img), "--artifact", str(exported["fixed"]), "--overlap", "12"]
    assert main([*argv, "--out", str(tmp_path / "o.png")]) == 1


def test_force_and_default_output_name(exported, tmp_path, capsys):
    img = image(tmp_path, 20, 20)
    argv = ["upscale", str(img), "--artifact", str(exported["fixed"]), "--overlap", "4"]
    assert main(argv) == 0
    out = tmp_path / "lr_20x20_x2.png"
    assert out.is_file() and "onnx fp32 artifact" in capsys.readouterr().err
    before = out.stat().st_mtime_ns
    assert main(argv) == 1 and "--force" in capsys.readouterr().err
    assert out.stat().st_mtime_ns == before  # not overwritten
    assert main([*argv, "--force"]) == 0


def test_manifest_path_is_accepted(exported, tmp_path):
    manifest = exported["fixed"].with_name(exported["fixed"].name + ".json")
    up = artifact_upscaler(manifest)
    assert up.scale == 2 and up.input_hw == INPUT[2:]


def test_missing_manifest_is_a_clear_error(exported, tmp_path, capsys):
    lone = tmp_path / exported["fixed"].name
    shutil.copy(exported["fixed"], lone)
    argv = [
        "upscale",
        str(image(tmp_path, 20, 20)),
        "--artifact",
        str(lone),
        "--out",
        str(tmp_path / "o.png"),
    ]
    assert main(argv) == 1
    assert "no manifest next to it" in capsys.readouterr().err and not (tmp_path / "o.png").exists()


def test_runtime_that_cannot_run_here_gives_its_reason(exported, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(get_exporter("onnx"), "runs_here", lambda _path: "needs macOS", raising=False)
    argv = ["upscale", str(image(tmp_path, 20, 20)), "--artifact", str(exported["fixed"])]
    assert main([*argv, "--out", str(tmp_path / "o.png")]) == 1
    assert "cannot run on this machine: needs macOS" in capsys.readouterr().err


def test_checkpoint_and_artifact_exclude_each_other(exported, tmp_path, capsys):
    img = str(image(tmp_path, 20, 20))
    with pytest.raises(SystemExit):
        main(["upscale", img, "--checkpoint", str(exported["ckpt"]), "--artifact", str(exported["fixed"])])
    with pytest.raises(SystemExit):
        main(["upscale", img])
    assert main(["upscale", img, "--artifact", str(exported["fixed"]), "--width", "0.5"]) == 1
    assert "--width applies to --checkpoint" in capsys.readouterr().err
