"""Width selection from profiles (measured widths, the latency model where it is trusted), and the CLI."""

from __future__ import annotations

import shutil

import pytest

from edgesr.cli import main
from edgesr.devices import DEVICES_DIR, load_device
from edgesr.models import build_model, candidate_widths, materialize
from edgesr.profile.layers import model_layers
from edgesr.profile.store import ModelInfo, Record, Stats, save_records
from edgesr.recipe import RECIPES_DIR, load_recipe
from edgesr.selection import select_width

ARCH = build_model("edsr", scale=2, n_resblocks=1, n_feats=32).arch  # widths 0.25 .. 1 (8 .. 32 ch)
RES = "16x12"


def _model_rec(width, ms):
    ch = round(32 * width)
    return Record(
        artifact=f"w{width}.onnx",
        runtime="onnxruntime",
        delegate="cpu",
        precision="fp32",
        resolution=RES,
        stats=Stats(median_ms=ms, p90_ms=ms * 1.1, count=5),
        measured_at="2026-11-22T00:00:00Z",
        method="host",
        threads=2,
        model=ModelInfo(ARCH, width, ch, 1, 1),
    )


def _layer_recs(scale_ms):
    """A synthetic table whose per-layer time is proportional to work, so predictions are exact for
    a runtime that neither fuses nor has overhead."""
    keys = set()
    full = build_model(ARCH["name"], **ARCH["args"])
    for w in candidate_widths(ARCH):
        keys.update(model_layers(full if w == 1 else materialize(full, w), (12, 16)))
    out = []
    for k in keys:
        work = (k.c_in * k.c_out * k.kernel**2 if k.kind == "conv" else k.c_out) * k.height * k.width
        out.append(
            Record(
                artifact="l",
                runtime="onnxruntime",
                delegate="cpu",
                precision="fp32",
                resolution=f"{k.width}x{k.height}",
                stats=Stats(median_ms=work * scale_ms),
                measured_at="2026-11-22T00:00:00Z",
                method="host",
                threads=2,
                layer=k,
            )
        )
    return out


def _predicted(width, scale_ms):
    full = build_model(ARCH["name"], **ARCH["args"])
    m = full if width == 1 else materialize(full, width)
    return sum(
        (k.c_in * k.c_out * k.kernel**2 if k.kind == "conv" else k.c_out) * k.height * k.width * scale_ms
        for k in model_layers(m, (12, 16))
    )


def test_select_widest_measured_under_budget(tmp_path):
    save_records("host", [_model_rec(0.25, 3.0), _model_rec(0.5, 7.0), _model_rec(1.0, 20.0)], "m", tmp_path)
    dev = load_device("host")
    from edgesr.devices import parse_resolution

    sel = select_width(
        dev, 8.0, ARCH, "onnxruntime", parse_resolution(RES), root=tmp_path, psnr={0.25: 30.0, 0.5: 31.0}
    )
    assert sel.chosen.width == 0.5 and sel.chosen.basis == "measured" and sel.chosen.psnr_db == 31.0
    # no latency model: unmeasured widths have no latency and cannot be chosen
    assert next(c for c in sel.candidates if c.width == 0.75).latency_ms is None
    assert select_width(dev, 2.0, ARCH, "onnxruntime", parse_resolution(RES), root=tmp_path).chosen is None
    # the CPU clock: these records have no CPU times, so nothing is known on that clock
    cpu = select_width(dev, 8.0, ARCH, "onnxruntime", parse_resolution(RES), root=tmp_path, clock="cpu")
    assert cpu.chosen is None and all(c.measured_ms is None for c in cpu.candidates)


def test_trusted_latency_model_fills_unmeasured_widths_untrusted_does_not(tmp_path):
    from edgesr.devices import parse_resolution

    k = 1e-6
    measured = [_model_rec(w, _predicted(w, k)) for w in (0.25, 0.5, 1.0)]
    save_records("host", measured, "m", tmp_path)
    save_records("host", _layer_recs(k), "l", tmp_path, kind="layers")
    dev, res = load_device("host"), parse_resolution(RES)
    budget = (_predicted(0.75, k) + _predicted(1.0, k)) / 2
    sel = select_width(dev, budget, ARCH, "onnxruntime", res, root=tmp_path)
    assert sel.accuracy.trusted and sel.accuracy.share_within == 1.0
    assert sel.chosen.width == 0.75 and sel.chosen.basis == "predicted"
    assert any("predicted, not measured" in n for n in sel.notes)
    # the device runs every width 30% slower than the table says: calibrated, 0.75 is predicted 30% up
    save_records("host", [_model_rec(w, _predicted(w, k) * 1.3) for w in (0.25, 0.5, 1.0)], "m", tmp_path)
    sel = select_width(dev, budget * 1.3, ARCH, "onnxruntime", res, root=tmp_path)
    assert sel.accuracy.trusted and sel.accuracy.scale == pytest.approx(1.3, rel=1e-3)  # stored to 4 decimals
    c75 = next(c for c in sel.candidates if c.width == 0.75)
    assert c75.basis == "predicted" and c75.predicted_ms == pytest.approx(_predicted(0.75, k) * 1.3, rel=1e-3)
    assert sel.chosen.width == 0.75
    # now the measurements disagree with the table by -30% .. +30%: not trusted, 0.75 is unknown
    off = {0.25: 1.3, 0.5: 1.0, 1.0: 0.7}
    save_records("host", [_model_rec(w, _predicted(w, k) * f) for w, f in off.items()], "m", tmp_path)
    sel = select_width(dev, _predicted(0.75, k) * 1.01, ARCH, "onnxruntime", res, root=tmp_path)
    assert not sel.accuracy.trusted
    assert next(c for c in sel.candidates if c.width == 0.75).basis == "none"


def test_cli_select_width_says_when_nothing_is_known(tmp_path, capsys):
    """No profile at all at these settings: not 'no width meets the budget' but that nothing is known,
    with the note naming the settings and the command that measures them."""
    from edgesr.student import resolve_arch

    arch = resolve_arch(RECIPES_DIR / "quickstart_student.yaml")
    one_thread = [  # measured, but at 1 thread, and the device file says 2
        Record(**{**_model_rec(w, 5.0).__dict__, "resolution": "32x24", "threads": 1,
                  "model": ModelInfo(arch, w, round(64 * w), 1, 1)})
        for w in (0.125, 0.25)
    ]  # fmt: skip
    save_records("host", one_thread, "m", tmp_path / "prof")
    rc = main(["select-width", "--device", str(DEVICES_DIR / "host.yaml"), "--budget-ms", "1000",
               "--resolution", "32x24", "--recipe", "quickstart_student",
               "--profiles", str(tmp_path / "prof"), "--plot", str(tmp_path / "sel.png")])  # fmt: skip
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 1 and "no latency is known for any width" in err and "meets the budget" not in err
    assert "no whole-model measurements" in err and "edgesr profile sweep" in err


def test_cli_select_width_write(tmp_path, capsys):
    from edgesr.student import resolve_arch

    recipe = tmp_path / "quickstart_student.yaml"
    shutil.copy(RECIPES_DIR / "quickstart_student.yaml", recipe)
    arch = resolve_arch(recipe)
    recs = []
    for w, ms in [(0.125, 5.0), (0.25, 9.0), (0.375, 14.0), (0.5, 30.0)]:
        r = _model_rec(w, ms)
        recs.append(
            Record(**{**r.__dict__, "resolution": "32x24", "model": ModelInfo(arch, w, round(64 * w), 1, 1)})
        )
    save_records("host", recs, "m", tmp_path / "prof")
    rc = main(
        [
            "select-width",
            "--device",
            str(DEVICES_DIR / "host.yaml"),
            "--budget-ms",
            "20",
            "--resolution",
            "32x24",
            "--recipe",
            str(recipe),
            "--write",
            "--profiles",
            str(tmp_path / "prof"),
            "--plot",
            str(tmp_path / "sel.png"),
        ]
    )
    assert rc == 0 and load_recipe(recipe).train.widths == (0.375,)
    assert (tmp_path / "sel.png").read_bytes()[:4] == b"\x89PNG"
    rc = main(
        [
            "select-width",
            "--device",
            "host",
            "--budget-ms",
            "1",
            "--resolution",
            "32x24",
            "--profiles",
            str(tmp_path / "prof"),
            "--plot",
            str(tmp_path / "sel2.png"),
        ]
    )
    assert rc == 1 and "no width meets the budget" in capsys.readouterr().err  # nothing fits 1 ms
