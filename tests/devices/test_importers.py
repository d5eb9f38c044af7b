"""Parsers on samples in the tools' real output formats, and a real ETDump made with ExecuTorch."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgesr.devices import load_device
from edgesr.profile.importers import (
    ParseError,
    parse_benchmark_model,
    parse_executor_runner,
    parse_executorch_json,
    parse_file,
)
from edgesr.profile.ingest import import_results

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
