"""The latency model's arithmetic, width selection from profiles, and `--write` editing one number."""

from __future__ import annotations

import shutil

import pytest

from edgesr.cli import main
from edgesr.devices import DEVICES_DIR, load_device
from edgesr.models import build_model, materialize
from edgesr.profile.latency_model import CALL_KEY, Accuracy, Check, LayerTable, MissingLayerError
from edgesr.profile.layers import model_layers
from edgesr.profile.store import LayerKey, ModelInfo, Record, Stats, save_records
from edgesr.recipe import RECIPES_DIR, RecipeError, load_recipe
from edgesr.select import candidate_widths, select_width, write_recipe_width

ARCH = build_model("edsr", scale=2, n_resblocks=1, n_feats=32).arch  # widths 0.25 .. 1 (8 .. 32 ch)
RES = "16x12"


def test_table_sums_layers_minus_repeated_call_overhead_and_interpolates():
    a, b = LayerKey("conv", 8, 8, 3, 4, 4), LayerKey("conv", 24, 24, 3, 4, 4)
    t = LayerTable(
        {a: 1.0, b: 5.0, LayerKey("relu", 8, 8, 0, 4, 4): 0.3, CALL_KEY: 0.1}, "ort", "cpu", "fp32", 2
    )
    layers = [a, LayerKey("relu", 8, 8, 0, 4, 4), a]
    assert t.predict(layers) == pytest.approx(1.0 + 0.3 + 1.0 - 2 * 0.1)
    # 16x16 conv: work 16*16*9 lies between 8*8*9 and 24*24*9, linear in work
    mid = LayerKey("conv", 16, 16, 3, 4, 4)
    assert t.layer_ms(mid) == pytest.approx(1.0 + 4.0 * (256 - 64) / (576 - 64))
    with pytest.raises(MissingLayerError, match="conv k3 64->64 @4x4"):
        t.layer_ms(LayerKey("conv", 64, 64, 3, 4, 4))  # outside the measured range: no guessing
    with pytest.raises(MissingLayerError):
        t.layer_ms(LayerKey("conv", 16, 16, 3, 8, 8))  # another resolution


def _checks(ratios):
    """Checks whose prediction is `ratio` x a 10 ms measurement, one per width."""
    widths = (0.25, 0.5, 0.75, 1.0, 1.25)
    return tuple(Check(w, 8, 10.0, 10.0 * r) for w, r in zip(widths, ratios, strict=False))


def test_accuracy_calibrates_a_device_wide_bias_and_judges_it_held_out():
    # every prediction 30% high: the raw sum misses all widths, one fitted factor fixes all of them
    biased = Accuracy(_checks([1.3, 1.3, 1.3, 1.3]))
    assert biased.raw_share == 0.0
    assert biased.scale == pytest.approx(1 / 1.3)
    assert [c.error for c in biased.held_out] == pytest.approx([0.0] * 4, abs=1e-12)
    assert biased.trusted and biased.predict(13.0) == pytest.approx(10.0)
    assert "sum of layers 0/4" in biased.summary() and "held out 4/4" in biased.summary()
    # scattered errors are not a bias: no single factor fits them, the model is not trusted
    scattered = Accuracy(_checks([1.0, 1.3, 0.8, 1.0]))
    assert scattered.share_within < 0.9 and not scattered.trusted
    assert "NOT trusted" in scattered.summary()


def test_accuracy_is_leave_one_out_not_in_sample():
    acc = Accuracy(_checks([1.0, 1.0, 1.25]))
    # fitted on all three (in sample) the first two would be within 10% (-7.2%) and the third not
    in_sample = [abs(r * acc.scale - 1) <= 0.10 for r in (1.0, 1.0, 1.25)]
    assert in_sample == [True, True, False]
    # held out: width 0.25 is predicted with the factor of (1.0, 1.25), -10.6%; the outlier with
    # the factor of the two exact widths, +25%
    errors = [c.error for c in acc.held_out]
    assert errors == pytest.approx([1.25**-0.5 - 1, 1.25**-0.5 - 1, 0.25])
    assert acc.share_within == 0.0 and not acc.trusted


def test_accuracy_needs_three_widths_to_calibrate_or_trust():
    two = Accuracy(_checks([1.05, 0.95]))
    assert two.raw_share == 1.0 and not two.calibrated and two.scale == 1.0
    assert not two.trusted and two.held_out == () and "3 widths needed" in two.summary()
    assert Accuracy(_checks([1.05, 0.95, 1.0])).trusted
    assert "not checked" in Accuracy().summary()


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


def test_write_changes_only_the_width_characters(tmp_path):
    src = RECIPES_DIR / "quickstart_student.yaml"
    dst = tmp_path / "student.yaml"
    shutil.copy(src, dst)
    before = dst.read_bytes()
    old, _ = write_recipe_width(dst, 0.375)
    after = dst.read_bytes()
    assert old == 0.25
    i = before.index(b"widths: [0.25]") + len(b"widths: [")
    assert after == before[:i] + b"0.375" + before[i + len(b"0.25") :]  # every other byte identical
    assert load_recipe(dst).train.widths == (0.375,)


def test_write_keeps_crlf_line_endings_and_the_file_mode(tmp_path):
    dst = tmp_path / "student.yaml"
    before = (RECIPES_DIR / "quickstart_student.yaml").read_bytes().replace(b"\n", b"\r\n")
    dst.write_bytes(before)
    dst.chmod(0o640)
    write_recipe_width(dst, 0.375)
    i = before.index(b"widths: [0.25]") + len(b"widths: [")
    assert dst.read_bytes() == before[:i] + b"0.375" + before[i + len(b"0.25") :]
    assert dst.stat().st_mode & 0o777 == 0o640


def test_write_follows_eval_widths_and_block_lists(tmp_path):
    f = tmp_path / "r.yaml"
    text = (
        "# a comment that must survive\nname: r\nscale: 2\nmodel:\n  name: edsr\n  args: {n_feats: 32}\n"
        "train:\n  mode: single\n  widths:\n    - 0.5   # student\n  steps: 10\neval:\n  widths: [0.5]\n"
    )
    f.write_text(text)
    write_recipe_width(f, 0.25)
    assert f.read_text() == text.replace("- 0.5 ", "- 0.25 ").replace("widths: [0.5]", "widths: [0.25]")


def test_write_refuses_ambiguous_or_invalid_edits(tmp_path):
    f = tmp_path / "csd.yaml"
    f.write_text("name: c\ntrain:\n  widths: [0.25, 0.5]\n")
    with pytest.raises(RecipeError, match=r"csd\.yaml: .*exactly one student width"):
        write_recipe_width(f, 0.375)
    g = tmp_path / "teacher.yaml"
    g.write_text("name: t\ntrain:\n  mode: csd\n  widths: [0.25]\n")
    before = g.read_text()
    with pytest.raises(RecipeError, match="csd student widths must be < 1"):
        write_recipe_width(g, 1.0)
    assert g.read_text() == before  # validated before writing: the file is untouched


def test_cli_select_width_write(tmp_path):
    from edgesr.select import resolve_arch

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
    assert rc == 1  # nothing fits 1 ms


def test_chained_layers_count_their_in_context_cost():
    from dataclasses import replace

    body = LayerKey("conv+relu", 8, 8, 3, 4, 4)
    head = LayerKey("conv", 3, 8, 3, 4, 4)
    t = LayerTable({body: 1.0, replace(body, repeat=2): 1.6, head: 0.5, CALL_KEY: 0.1}, "o", "cpu", "fp32", 1)
    assert t.marginal_ms(body) == pytest.approx(0.6) and t.marginal_ms(head) is None
    # the body layer costs 0.6 in context (its boundary paid once, by the network); one network call
    assert t.predict([head, body, body]) == pytest.approx(0.5 + 0.6 + 0.6)
    assert t.predict([body, body]) == pytest.approx(0.6 + 0.6 + 0.1)


def test_chained_table_module_is_the_layer_twice():
    from dataclasses import replace

    from edgesr.profile.layers import layer_module

    key = LayerKey("conv+mul_scalar+add", 8, 8, 3, 6, 7)
    module, shape = layer_module(replace(key, repeat=2))
    assert model_layers(module, shape[2:], in_channels=8) == [key, key]
