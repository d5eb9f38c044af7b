"""What a newcomer met following the README, each as a test that failed before its fix: commands
that wrote into the package, hints and messages that misled, EXIF rotation, noise from the SDKs."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import edgesr
from edgesr.cli import main
from edgesr.devices import DEVICES_DIR
from edgesr.models import build_model
from edgesr.profile.store import PROFILES_DIR, ModelInfo, Record, Stats, device_records, save_records
from edgesr.recipe import RECIPES_DIR, load_recipe
from edgesr.student import resolve_arch
from edgesr.train.checkpoint import CheckpointMeta, save_checkpoint


def _records(arch, widths_ms, notes=""):
    return [
        Record(artifact=f"w{w}.onnx", runtime="onnxruntime", delegate="cpu", precision="fp32",
               resolution="32x24", stats=Stats(median_ms=ms, p90_ms=ms, count=5),
               measured_at="2026-12-02T00:00:00Z", method="host", threads=2,
               model=ModelInfo(arch, w, round(64 * w), 1, 1), notes=notes)
        for w, ms in widths_ms
    ]  # fmt: skip


def _select(*extra: str) -> list[str]:
    return ["select-width", "--device", str(DEVICES_DIR / "host.yaml"), "--budget-ms", "20",
            "--resolution", "32x24", *extra]  # fmt: skip


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"edgesr {edgesr.__version__}"


@pytest.mark.parametrize("command", ["quickstart", "eval", "inspect", "recipes", "bench", "upscale", "train"])
def test_every_command_prints_examples_with_h(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "-h"])
    assert "examples:" in capsys.readouterr().out


def test_measurements_go_to_the_user_profiles_and_both_are_read(tmp_path, monkeypatch):
    """Before: `profile sweep --device host` appended the user's timings to devices/profiles/host/."""
    arch = resolve_arch(RECIPES_DIR / "quickstart_student.yaml")
    shipped = {p: p.read_bytes() for p in PROFILES_DIR.rglob("*.yaml")}
    path = save_records("host", _records(arch, [(0.125, 5.0)]), "models_onnxruntime")
    assert path.is_relative_to(Path(os.environ["EDGESR_PROFILES"]))
    assert {p: p.read_bytes() for p in PROFILES_DIR.rglob("*.yaml")} == shipped
    mine = [r for r in device_records("host") if r.resolution == "32x24"]
    assert len(mine) == 1 and len(device_records("host")) > 1  # the shipped ones are read too
    assert device_records("host", tmp_path / "elsewhere") == []  # --profiles DIR: that folder alone


def test_select_width_write_copies_a_shipped_recipe_refuses_a_read_only_one(tmp_path, monkeypatch, capsys):
    """Before: `--recipe quickstart_student --write` rewrote the shipped recipe, and a 0444 recipe
    was replaced without a word."""
    arch = resolve_arch(RECIPES_DIR / "quickstart_student.yaml")
    save_records("host", _records(arch, [(0.125, 5.0), (0.25, 9.0), (0.375, 14.0), (0.5, 30.0)]), "m")
    monkeypatch.chdir(tmp_path)
    shipped = (RECIPES_DIR / "quickstart_student.yaml").read_bytes()
    plot = ["--plot", str(tmp_path / "sel.png")]
    assert main(_select("--recipe", "quickstart_student", "--write", *plot)) == 0
    assert (RECIPES_DIR / "quickstart_student.yaml").read_bytes() == shipped
    assert load_recipe(tmp_path / "quickstart_student.yaml").train.widths == (0.375,)
    assert "edgesr train quickstart_student.yaml" in capsys.readouterr().err
    mine = (tmp_path / "quickstart_student.yaml").read_bytes()
    assert main(_select("--recipe", "quickstart_student", "--write", *plot)) == 1  # the copy exists
    assert "--recipe quickstart_student.yaml --write" in " ".join(capsys.readouterr().err.split())
    assert (tmp_path / "quickstart_student.yaml").read_bytes() == mine  # the user's copy untouched

    locked = tmp_path / "locked.yaml"
    locked.write_bytes(shipped)
    locked.chmod(0o444)
    assert main(_select("--recipe", str(locked), "--write", *plot)) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "read-only (mode 444)" in err and locked.read_bytes() == shipped
    assert stat.S_IMODE(locked.stat().st_mode) == 0o444


def test_select_width_says_the_machine_was_busy_and_does_not_claim_no_measurements(tmp_path, capsys):
    """Before: "latency model not checked (no whole-model measurements)" right after choosing from
    whole-model measurements, and no word about a loaded machine."""
    arch = resolve_arch(RECIPES_DIR / "quickstart_student.yaml")
    busy = "load average 3.9 on 2 CPUs"
    save_records("host", _records(arch, [(0.125, 5.0), (0.25, 9.0)], busy), "m")
    assert main(_select("--recipe", "quickstart_student", "--plot", str(tmp_path / "s.png"))) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "no whole-model measurements" not in err and "the latencies are measured" in err
    assert f"measured while the machine was busy ({busy})" in err


def test_select_width_hint_for_a_phone_does_not_point_at_sweep(capsys):
    """Before: `select-width --device pixel8` suggested `profile sweep --device pixel8`, which refuses
    adb devices."""
    assert main(["select-width", "--device", "pixel8", "--budget-ms", "30"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "profile sweep" not in err and "profile run ARTIFACT --device pixel8" in err


def test_the_csd_quickstart_stage_alone_asks_for_its_teacher(tmp_path, monkeypatch, capsys):
    """Before: `edgesr train quickstart` trained CSD from scratch and ended below bicubic silently."""
    monkeypatch.chdir(tmp_path)  # no runs/quickstart/teacher here
    assert main(["train", "quickstart", "--run-dir", str(tmp_path / "run")]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "train.init=runs/quickstart/teacher: no such run directory" in err
    assert not (tmp_path / "run").exists()


def test_upscale_applies_exif_orientation(tmp_path):
    """Before: a phone photo tagged "rotate 90" (orientation 6) came out sideways."""
    net = build_model("edsr", scale=2, n_resblocks=1, n_feats=16)
    ckpt = save_checkpoint(tmp_path / "ckpt", net, CheckpointMeta(net.arch, 2, (1.0,), None, "r", 1), None)
    img = Image.fromarray((np.random.default_rng(0).random((20, 36, 3)) * 255).astype(np.uint8))
    exif = img.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    img.save(tmp_path / "phone.jpg", exif=exif.tobytes())
    out = tmp_path / "o.png"
    assert main(["upscale", str(tmp_path / "phone.jpg"), "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    assert Image.open(tmp_path / "o.png").size == (40, 72)  # displayed 20 wide x 36 high, x2


def test_export_sends_sdk_output_to_its_log(tmp_path, capfd, monkeypatch):
    """Before: ~100 lines of converter noise (torchao `Failed to load`, version warnings) on the
    terminal. What an exporter prints at the file-descriptor level now goes to OUT/export.log."""
    from edgesr.export import onnx as onnx_exporter

    real = onnx_exporter.OnnxExporter.export

    def noisy(self, *args, **kwargs):
        os.write(2, b"Failed to load libfoo.so: third-party noise\n")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(onnx_exporter.OnnxExporter, "export", noisy)
    model = build_model("edsr", scale=2, n_resblocks=1, n_feats=16)
    save_checkpoint(tmp_path / "ckpt", model, CheckpointMeta(model.arch, 2, (1.0,), None, "r", 1), None)
    out = tmp_path / "exports"
    argv = ["export", str(tmp_path / "ckpt"), "--target", "onnx", "--input", "1x3x16x16", "--out", str(out)]
    assert main(argv) == 0
    captured = capfd.readouterr()
    assert "third-party noise" not in captured.err + captured.out
    assert "third-party noise" in (out / "export.log").read_text()
    assert "SDK messages:" in captured.err
