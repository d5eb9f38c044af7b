"""Parsers on samples in the tools' real output formats, and a real ETDump made with ExecuTorch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgesr.cli import main
from edgesr.devices import load_device
from edgesr.profile.importers import (
    ParseError,
    detect_format,
    parse_benchmark_model,
    parse_executor_runner,
    parse_executorch_json,
    parse_file,
)
from edgesr.profile.ingest import import_results
from edgesr.profile.store import load_profile

DATA = Path(__file__).parent / "data"


def test_benchmark_model_cpu():
    p = parse_benchmark_model((DATA / "benchmark_model_cpu.txt").read_text())
    # the timed runs' line, not the warm-up line before it; microseconds -> milliseconds
    assert p.stats.count == 50 and p.stats.mean_ms == pytest.approx(44.4816)
    assert p.stats.median_ms == pytest.approx(44.190) and p.stats.std_ms == pytest.approx(1.102)
    assert p.stats.min_ms == pytest.approx(43.517) and p.stats.max_ms == pytest.approx(49.806)
    assert p.stats.warmup == 5 and p.threads == 4 and p.delegate == "xnnpack"
    assert p.artifact == "edsr_x2_w0.25_180x320_fp32.tflite"
    assert p.peak_mem_mb == pytest.approx(41.3711) and "init 21.4 ms" in p.notes
    assert p.stats.typical_ms == p.stats.median_ms


def test_benchmark_model_op_profiling_table():
    p = parse_benchmark_model((DATA / "benchmark_model_op_profiling.txt").read_text())
    # no median in this tool version: the mean is what is known, and no p90 is invented
    assert p.stats.median_ms is None and p.stats.p90_ms is None
    assert p.stats.typical_ms == pytest.approx(44.452) and p.stats.typical_name == "mean"
    assert p.stats.count == 22 and p.threads == 2 and p.peak_mem_mb == pytest.approx(38.0859)
    assert p.delegate is None  # this output does not say which CPU path ran
    # the Run Order table of the regular runs: 9 nodes, not the initialization table's AllocateTensors
    kinds = [o.kind for o in p.ops]
    assert len(p.ops) == 9 and "AllocateTensors" not in kinds
    assert kinds.count("CONV_2D") == 5 and "TRANSPOSE" in kinds
    up = next(o for o in p.ops if o.name == "[edsr/upsample.0]:4")
    assert up.avg_ms == pytest.approx(17.204) and up.count == 1
    assert sum(o.avg_ms for o in p.ops) == pytest.approx(44.451, abs=0.01)


def test_benchmark_model_cut_off_by_a_disconnect_is_an_error():
    text = (DATA / "benchmark_model_gpu_disconnect.txt").read_text()
    with pytest.raises(ParseError, match="did the device disconnect"):
        parse_benchmark_model(text, "gpu run")
    with pytest.raises(ParseError, match="did the device disconnect"):
        parse_file(DATA / "benchmark_model_gpu_disconnect.txt")  # auto-detected as benchmark_model


@pytest.mark.parametrize("name", ["benchmark_model_cpu.txt", "benchmark_model_op_profiling.txt"])
def test_benchmark_model_cut_at_every_line_is_refused_until_the_timed_runs_report(name, tmp_path):
    """Before: output cut after the warm-up imported the warm-up's count and median as the
    measurement. Every cut before the timed runs' line is refused; every cut after it reads the same."""
    lines = (DATA / name).read_text().splitlines(keepends=True)
    full = parse_benchmark_model("".join(lines))
    timed = next(i for i, ln in enumerate(lines) if f"count={full.stats.count} " in ln)
    for cut in range(1, len(lines)):
        text = "".join(lines[:cut])
        if cut <= timed:
            with pytest.raises(ParseError, match="did the device disconnect|not benchmark_model"):
                parse_benchmark_model(text, name)
        else:
            assert parse_benchmark_model(text, name).stats == full.stats
    cut = tmp_path / "cut.txt"
    cut.write_text("".join(lines[:timed]))
    out = tmp_path / "profiles"
    code = main(["profile", "import", str(cut), "--device", "pixel8", "--profiles", str(out)])
    assert code == 1 and not out.exists()  # nothing saved


def test_benchmark_model_count_below_the_announced_runs_is_refused_unless_it_ended_normally():
    text = (DATA / "benchmark_model_cpu.txt").read_text().replace("count=50 first", "count=31 first")
    # ended normally (its summary line): the time limit (--max_secs) stopped the section early
    assert parse_benchmark_model(text).stats.count == 31
    cut = text[: text.index("INFO: Inference timings in us")]
    with pytest.raises(ParseError, match="count=31 but at least 50 were announced"):
        parse_benchmark_model(cut)


def test_executor_runner_cut_short_is_refused():
    lines = (DATA / "executor_runner_iterations.txt").read_text().splitlines(keepends=True)
    done = next(i for i, ln in enumerate(lines) if "executed successfully" in ln)
    for cut in range(1, done + 1):
        with pytest.raises(ParseError, match="did not finish"):
            parse_executor_runner("".join(lines[:cut]))
    missing_one = "".join(ln for ln in lines if "Iteration 4 of 6" not in ln)
    with pytest.raises(ParseError, match="5 'Iteration i of 6' lines"):
        parse_executor_runner(missing_one)


def test_executor_runner_both_log_styles():
    it = parse_executor_runner((DATA / "executor_runner_iterations.txt").read_text())
    # 6 iterations: the first (61.4 ms, one-time set-up) is the warm-up, 5 are counted
    assert it.stats.count == 5 and it.stats.warmup == 1
    assert it.stats.median_ms == pytest.approx(45.519) and it.stats.max_ms == pytest.approx(46.002)
    assert it.threads == 4 and it.artifact == "edsr_x2_w0.25_180x320_fp32.pte"
    tot = parse_executor_runner((DATA / "executor_runner_total.txt").read_text())
    assert tot.stats.count == 10 and tot.stats.mean_ms == pytest.approx(46.062)
    assert tot.stats.median_ms is None and tot.stats.p90_ms is None


def test_executorch_benchmark_results_json():
    (p,) = parse_executorch_json((DATA / "benchmark_results.json").read_text())
    assert p.stats.mean_ms == pytest.approx(47.3175) and p.stats.trimmed_mean_ms == pytest.approx(45.9042)
    assert p.stats.typical_name == "trimmed mean" and p.stats.count is None
    assert p.delegate == "xnnpack" and p.artifact == "edsr_x2_w025" and p.peak_mem_mb == 38.0
    assert "Pixel 8" in p.notes and "model load 31.2 ms" in p.notes
    with pytest.raises(ParseError, match="expected a list"):
        parse_executorch_json('{"metric": 1}', "x.json")
    bad = (
        '[{"benchmarkModel": {"name": "m"}, "metric": "load_status", "actualValue": 3}, '
        '{"benchmarkModel": {"name": "m"}, "metric": "avg_inference_latency(ms)", "actualValue": 1}]'
    )
    with pytest.raises(ParseError, match="failed to load"):
        parse_executorch_json(bad, "x.json")


def test_etdump_csv_from_a_real_run():
    p = parse_file(DATA / "tiny_xnnpack_etdump.csv")[0]
    assert p.stats.count == 5 and p.runtime == "executorch" and p.delegate == "xnnpack"
    assert {o.kind for o in p.ops} >= {"Convolution (NHWC, F32) IGEMM", "Transpose (ND, X32)"}
    assert p.stats.min_ms <= p.stats.median_ms <= p.stats.p90_ms <= p.stats.max_ms


def test_real_etdump_file_matches_its_csv():
    pytest.importorskip("executorch.devtools", reason='needs ExecuTorch (pip install "edgesr[executorch]")')
    p = parse_file(DATA / "tiny_xnnpack.etdump")[0]
    c = parse_file(DATA / "tiny_xnnpack_etdump.csv")[0]
    assert p.stats.median_ms == pytest.approx(c.stats.median_ms) and len(p.ops) == len(c.ops)


def test_garbage_is_rejected_with_the_file_name(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("hello\n")
    with pytest.raises(ParseError, match="notes.txt: cannot tell the format"):
        parse_file(f)
    f = tmp_path / "x.etdump"
    f.write_bytes(b"\x00\x01garbage")
    pytest.importorskip("executorch.devtools")
    with pytest.raises(ParseError, match="x.etdump: not a readable ETDump"):
        parse_file(f)


def test_import_into_device_records():
    (rec,) = import_results(DATA / "benchmark_results.json", load_device("pixel8"))
    assert (
        rec.runtime == "executorch" and rec.resolution == "320x180" and rec.method == "import:executorch-json"
    )
    assert rec.stats.trimmed_mean_ms == pytest.approx(45.9042)
    with pytest.raises(ValueError, match="has no runtime 'litert'"):
        import_results(DATA / "benchmark_model_cpu.txt", load_device("iphone15pro"))


AIHUB = DATA / "aihub_profile.json"


def _aihub(tmp_path: Path, **summary_changes: object) -> Path:
    """The AI Hub sample with execution_summary keys replaced (a value of ... deletes the key)."""
    data = json.loads(AIHUB.read_text())
    for k, v in summary_changes.items():
        if v is ...:
            del data["execution_summary"][k]
        else:
            data["execution_summary"][k] = v
    f = tmp_path / "profile.json"
    f.write_text(json.dumps(data))
    return f


def test_aihub_profile_json():
    (p,) = parse_file(AIHUB)
    # 12 runs in microseconds; the first (61.9 ms, cold) is the warm-up, 11 are counted
    assert p.stats.count == 11 and p.stats.warmup == 1
    assert p.stats.median_ms == pytest.approx(18.356) and p.stats.typical_name == "median"
    assert p.stats.min_ms == pytest.approx(18.265) and p.stats.max_ms == pytest.approx(18.912)
    assert p.stats.p90_ms == pytest.approx(18.498)
    # the upper bound of inference_memory_peak_range (14680064 bytes), not the process peak (58.5 MB)
    assert p.peak_mem_mb == pytest.approx(14.0)
    assert p.runtime is None and p.delegate is None  # the profile does not say; the importer asks
    assert p.extra["compute_units"] == {"NPU": 20, "CPU": 2}
    assert p.notes.startswith("compute units: NPU 20, CPU 2")
    assert "first of 12 runs (61.9 ms, cold)" in p.notes and "AI Hub estimate 18.265 ms" in p.notes
    assert "process peak after inference 58.5 MB" in p.notes and "first load 1873.3 ms" in p.notes
    assert len(p.ops) == 22 and p.ops[0].kind == "QuantizeLinear" and p.ops[0].delegate == "CPU"
    assert p.ops[0].avg_ms == pytest.approx(0.412)
    up = next(o for o in p.ops if o.kind == "DepthToSpace")
    assert up.name == "/tail/tail.0/tail.0.1/DepthToSpace" and up.delegate == "NPU"
    assert sum(o.avg_ms for o in p.ops) == pytest.approx(19.981)


def test_aihub_and_executorch_json_are_told_apart(tmp_path):
    assert detect_format(AIHUB, AIHUB.read_text()) == "aihub-json"
    bench = DATA / "benchmark_results.json"
    assert detect_format(bench, bench.read_text()) == "executorch-json"
    assert parse_file(bench)[0].runtime == "executorch"  # still parsed as before
    f = tmp_path / "other.json"
    f.write_text('{"results": []}')
    with pytest.raises(ParseError, match="other.json: a JSON object without execution_summary"):
        parse_file(f)


def test_aihub_profile_without_timings_is_an_error_naming_file_and_key(tmp_path):
    f = _aihub(tmp_path, all_inference_times=..., estimated_inference_time=...)
    with pytest.raises(
        ParseError,
        match="profile.json: execution_summary has neither all_inference_times nor estimated_inference_time",
    ):
        parse_file(f)
    f = _aihub(tmp_path, all_inference_times="fast")
    with pytest.raises(
        ParseError, match=r"profile.json: execution_summary.all_inference_times must be a list"
    ):
        parse_file(f)
    f = _aihub(tmp_path, inference_memory_peak_range=[1, 2, 3])
    with pytest.raises(
        ParseError, match=r"execution_summary.inference_memory_peak_range must be \[low, high\]"
    ):
        parse_file(f)
    data = json.loads(AIHUB.read_text())
    del data["execution_detail"][3]["compute_unit"]
    f.write_text(json.dumps(data))
    with pytest.raises(ParseError, match=r"profile.json: execution_detail\[3\] has no compute_unit"):
        parse_file(f)


def test_aihub_profile_with_only_the_estimate_is_refused(tmp_path):
    # older profiles have no per-run times: their one figure is the fastest run, not a median
    f = _aihub(tmp_path, all_inference_times=..., inference_memory_peak_range=None)
    with pytest.raises(ParseError, match=r"profile.json: .*only estimated_inference_time \(18.265 ms\)"):
        parse_file(f, "aihub-json")


def test_import_aihub_profile_needs_the_runtime_and_maps_compute_units():
    with pytest.raises(ValueError, match="does not name its runtime; pass --runtime"):
        import_results(AIHUB, load_device("galaxy_s24"))
    (rec,) = import_results(AIHUB, load_device("galaxy_s24"), runtime="litert")
    assert rec.runtime == "litert" and rec.delegate == "qnn" and rec.method == "import:aihub-json"
    assert rec.stats.median_ms == pytest.approx(18.356) and rec.peak_mem_mb == pytest.approx(14.0)
    assert "compute units: NPU 20, CPU 2" in rec.notes and len(rec.ops) == 22
    (rec,) = import_results(AIHUB, load_device("iphone15pro"), runtime="coreml")
    assert rec.delegate == "ane"  # Core ML on the Neural Engine
    # the Pixel 8 file lists no NPU delegate for litert: no guess, ask for one
    with pytest.raises(ValueError, match="ran on NPU; .* pass --delegate"):
        import_results(AIHUB, load_device("pixel8"), runtime="litert")
    with pytest.raises(ValueError, match="lists no delegate 'ane' for litert"):
        import_results(AIHUB, load_device("galaxy_s24"), runtime="litert", delegate="ane")
    with pytest.raises(ValueError, match="is litert output .* --runtime executorch contradicts it"):
        import_results(DATA / "benchmark_model_cpu.txt", load_device("pixel8"), runtime="executorch")


def test_cli_profile_import_aihub_saves_a_profile(tmp_path):
    argv = ["profile", "import", str(AIHUB), "--device", "galaxy_s24", "--profiles", str(tmp_path / "prof")]
    assert main(argv) == 1  # no --runtime: a clear error, nothing saved
    assert not (tmp_path / "prof" / "galaxy_s24" / "models_litert.yaml").exists()
    assert main([*argv, "--runtime", "litert", "--resolution", "320x180"]) == 0
    prof = load_profile(tmp_path / "prof" / "galaxy_s24" / "models_litert.yaml")
    (rec,) = prof.records
    assert rec.delegate == "qnn" and rec.method == "import:aihub-json" and rec.resolution == "320x180"
    assert rec.stats.count == 11 and rec.stats.median_ms == pytest.approx(18.356)
    assert len(rec.ops) == 22 and rec.ops[0].delegate == "CPU" and rec.artifact == "aihub_profile.json"
