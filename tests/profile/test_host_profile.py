"""Host profiling with the real runtimes (tiny models, few runs), the layer list, and the store."""

from __future__ import annotations

import json
import mmap

import numpy as np
import pytest
import torch

from edgesr.devices import Resolution
from edgesr.errors import ProfileError, UsageError
from edgesr.models import build_model, count_macs, materialize
from edgesr.profile.host import PYTORCH, profile_module, sweep
from edgesr.profile.layers import UnsupportedLayerError, layer_module, model_layers
from edgesr.profile.store import LayerKey, Record, Stats, load_profile, save_records
from edgesr.profile.timing import PeakRSS, stats_from_ms, time_fn

ARCH = {
    "name": "edsr",
    "args": {
        "scale": 2,
        "n_resblocks": 1,
        "n_feats": 16,
        "res_scale": 1.0,
        "rgb_range": 1.0,
        "width_multiple": 8,
    },
}


def test_stats_of_known_samples():
    s = stats_from_ms([4.0, 1.0, 10.0, 2.0, 3.0], warmup=2)
    assert (s.median_ms, s.min_ms, s.max_ms, s.count, s.warmup) == (3.0, 1.0, 10.0, 5, 2)
    assert s.p90_ms == pytest.approx(7.6) and s.mean_ms == pytest.approx(4.0)
    assert s.std_ms == pytest.approx(np.sqrt(10.0))  # population std of the five values
    calls = []
    s = time_fn(lambda: calls.append(1), warmup=3, runs=4)
    assert len(calls) == 7 and s.count == 4 and s.warmup == 3
    assert s.cpu_median_ms is not None and s.value("cpu") == s.cpu_median_ms and s.value() == s.median_ms


def test_warm_up_lasts_at_least_warmup_s_and_is_counted():
    import time

    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.01)

    s = time_fn(fn, warmup=1, runs=2, warmup_s=0.08)
    assert s.warmup >= 6 and len(calls) == s.warmup + 2  # ~8 warm-up calls of 10 ms, not 1
    assert time_fn(lambda: None, warmup=2, runs=1).warmup == 2  # no time floor by default
    with pytest.raises(ValueError, match="warmup_s >= 0"):
        time_fn(fn, warmup_s=-1)


def test_cpu_clock_counts_work_not_waiting():
    import time

    s = time_fn(lambda: time.sleep(0.02), warmup=0, runs=3)
    assert s.median_ms >= 19 and s.cpu_median_ms < 5  # sleeping is wall time, not CPU time


def test_peak_rss_sees_an_allocation():
    # fresh anonymous pages, touched: a malloc'd block can be served from memory an earlier test
    # freed but the process still holds (the full suite once measured 0.0 MB that way)
    with PeakRSS() as mem, mmap.mmap(-1, 64 * 2**20) as block:
        block.write(b"\1" * len(block))
    assert mem.delta_mb is not None and mem.delta_mb >= 48


@pytest.mark.parametrize("target", [PYTORCH, "onnx"])
def test_profile_module_records_the_conditions(target):
    if target == "onnx":
        pytest.importorskip("onnxruntime")
    model = materialize(build_model(ARCH["name"], **ARCH["args"]), 0.5)
    rec = profile_module(model, target, (1, 3, 12, 16), "m", threads=1, warmup=1, runs=3)
    assert rec.stats.count == 3 and rec.stats.warmup == 1 and rec.threads == 1
    assert rec.resolution == "16x12" and len(rec.sha256) == 64 and rec.method == "host"
    assert rec.runtime == {"pytorch": "pytorch", "onnx": "onnxruntime"}[target] and rec.runtime_version
    assert rec.stats.min_ms <= rec.stats.median_ms <= rec.stats.p90_ms <= rec.stats.max_ms


def test_sweep_exports_each_width():
    pytest.importorskip("onnxruntime")
    recs = sweep(ARCH, [0.5, 1.0], "onnx", Resolution(16, 12), threads=1, warmup=1, runs=2)
    assert [r.model.channels for r in recs] == [8, 16]
    assert recs[0].model.macs < recs[1].model.macs and recs[0].model.params < recs[1].model.params
    assert recs[0].sha256 != recs[1].sha256 and all(r.artifact.endswith(".onnx") for r in recs)


def test_int8_sweep_times_the_ptq_graph_and_select_width_chooses_at_int8(tmp_path):
    pytest.importorskip("onnxruntime")
    from edgesr.devices import load_device
    from edgesr.selection import select_width

    recs = sweep(ARCH, [0.5, 1.0], "onnx", Resolution(16, 12), threads=1, warmup=1, runs=2, precision="int8")
    assert [r.precision for r in recs] == ["int8", "int8"] and all(
        r.artifact.endswith("_int8.onnx") for r in recs
    )
    fp32 = sweep(ARCH, [0.5], "onnx", Resolution(16, 12), threads=1, warmup=1, runs=2)
    assert fp32[0].sha256 != recs[0].sha256  # another graph: the QDQ one
    save_records("host", [*recs, *fp32], "m", tmp_path)
    budget = max(r.stats.typical_ms for r in recs) * 1.01
    dev = load_device("host")
    sel = select_width(dev, budget, ARCH, "onnxruntime", Resolution(16, 12), "int8", threads=1, root=tmp_path)
    assert sel.precision == "int8" and sel.chosen is not None and sel.chosen.width == 1.0
    by_width = {c.width: c.measured_ms for c in sel.candidates if c.measured_ms}
    expected = {0.5: recs[0].stats.typical_ms, 1.0: recs[1].stats.typical_ms}  # never the fp32 record
    assert by_width == pytest.approx(expected, abs=1e-4)  # profiles keep 0.1 us
    with pytest.raises(UsageError, match="fp32 only"):
        profile_module(build_model("plain", scale=2, n_convs=2, n_feats=4), "pytorch", (1, 3, 8, 8), "x",
                       precision="int8")  # fmt: skip


def test_layer_list_accounts_for_every_mac():
    model = build_model("edsr", scale=2, n_resblocks=2, n_feats=16, res_scale=0.1)  # 0.1: a real multiply
    for w in (0.5, 1.0):
        m = model if w == 1.0 else materialize(model, w)
        layers = model_layers(m, (12, 16))
        convs = [k for k in layers if k.kind.startswith("conv")]
        assert len(convs) == 2 * 2 + 4  # blocks, body_end, head, upsampler conv, tail
        macs = sum(k.c_in * k.c_out * k.kernel**2 * k.height * k.width for k in convs)
        assert macs == count_macs(m, (12, 16))  # the tail runs at 2x the LR size, and is counted so
    kinds = {k.kind for k in model_layers(model, (12, 16), fuse=False)}
    assert kinds == {"conv", "relu", "add", "add_bcast", "mul_scalar", "pixel_shuffle"}
    # fused: each conv takes the element-wise ops that consume only its output
    fused = [k.kind for k in model_layers(model, (12, 16))]
    assert fused == [
        "add_bcast",
        "conv",
        "conv+relu",
        "conv+mul_scalar+add",
        "conv+relu",
        "conv+mul_scalar+add",
        "conv+add",
        "conv",
        "pixel_shuffle",
        "conv+add_bcast",
    ]
    with pytest.raises(UnsupportedLayerError, match="AdaptiveAvgPool2d"):
        model_layers(build_model("rcan", scale=2, n_resgroups=1, n_resblocks=1, n_feats=16), (8, 8))


@pytest.mark.parametrize(
    "key",
    [
        LayerKey("conv", 8, 32, 3, 6, 7),
        LayerKey("add", 8, 8, 0, 6, 7),
        LayerKey("relu", 8, 8, 0, 6, 7),
        LayerKey("pixel_shuffle", 32, 8, 2, 6, 7),
        LayerKey("add_bcast", 3, 3, 0, 6, 7),
        LayerKey("mul_scalar", 8, 8, 0, 6, 7),
        LayerKey("conv+relu", 8, 16, 3, 6, 7),
        LayerKey("conv+mul_scalar+add", 8, 8, 3, 6, 7),
        LayerKey("conv+add_bcast", 8, 3, 3, 6, 7),
    ],
)
def test_each_table_module_is_seen_as_its_own_key(key):
    module, shape = layer_module(key)
    assert module(torch.rand(shape)).shape[1] == key.c_out
    assert model_layers(module, shape[2:], in_channels=shape[1]) == [key]


def _rec(name, ms, channels=None, **kw):
    from edgesr.profile.store import ModelInfo

    model = ModelInfo(ARCH, channels / 16, channels, 1, 1) if channels else None
    return Record(
        artifact=name,
        runtime="onnxruntime",
        delegate="cpu",
        precision="fp32",
        resolution="16x12",
        stats=Stats(median_ms=ms, count=3),
        measured_at="2026-11-22T00:00:00Z",
        method="host",
        threads=2,
        model=model,
        **kw,
    )


def test_store_round_trip_merge_and_stable_order(tmp_path):
    p = save_records(
        "host", [_rec("b.onnx", 2.0, 16), _rec("a.onnx", 1.0, 8)], "models_onnxruntime", tmp_path
    )
    first = p.read_text()
    assert first.index("a.onnx") < first.index("b.onnx")  # sorted by channels: diffs stay local
    save_records("host", [_rec("a.onnx", 1.5, 8)], "models_onnxruntime", tmp_path)  # re-measured
    prof = load_profile(p)
    assert [(r.artifact, r.stats.median_ms) for r in prof.records] == [("a.onnx", 1.5), ("b.onnx", 2.0)]
    assert p.read_text().replace("1.5", "1.0") == first  # only the changed number moved


def test_corrupt_profile_names_the_file(tmp_path):
    p = save_records("host", [_rec("a.onnx", 1.0, 8)], "models_onnxruntime", tmp_path)
    p.write_text(p.read_text().replace("median_ms: 1.0", "median_ms: fast"))
    with pytest.raises(ProfileError, match=r"models_onnxruntime\.yaml: records\[0\]\.stats\.median_ms"):
        load_profile(p)
    p.write_text(p.read_text().replace("edgesr-profile/1", "edgesr-profile/9"))
    with pytest.raises(ProfileError, match="format: expected 'edgesr-profile/1'"):
        load_profile(p)


def test_cli_profile_run_on_host(tmp_path):
    pytest.importorskip("onnxruntime")
    from edgesr.cli import main
    from edgesr.export import ExportRequest, export_checkpoint
    from edgesr.train.checkpoint import CheckpointMeta, save_checkpoint

    model = materialize(build_model(ARCH["name"], **ARCH["args"]), 0.5)
    save_checkpoint(tmp_path / "ck", model, CheckpointMeta(model.arch, 2, (0.5,), 0.5, "r", 1), None)
    art = export_checkpoint(
        ExportRequest(tmp_path / "ck", "onnx", input_shape=(1, 3, 12, 16), out_dir=tmp_path / "ex")
    ).artifact
    assert (
        main(
            [
                "profile",
                "run",
                str(art),
                "--device",
                "host",
                "--runs",
                "2",
                "--warmup",
                "1",
                "--profiles",
                str(tmp_path / "prof"),
            ]
        )
        == 0
    )
    (rec,) = load_profile(tmp_path / "prof" / "host" / "models_onnxruntime.yaml").records
    manifest = json.loads(art.with_name(art.name + ".json").read_text())
    assert rec.sha256 == manifest["artifact"]["sha256"] and rec.model.width == 0.5 and rec.model.channels == 8
    assert rec.resolution == "16x12" and rec.threads == 2 and rec.stats.count == 2


@pytest.mark.slow
@pytest.mark.parametrize(
    "target, module", [("executorch", "executorch.runtime"), ("tflite", "ai_edge_litert")]
)
def test_profile_module_on_the_other_registered_runtimes(target, module):
    """The host profiler is generic over EXPORTERS (each conversion takes a minute here: slow)."""
    pytest.importorskip(module)
    model = materialize(build_model(ARCH["name"], **ARCH["args"]), 0.5)
    rec = profile_module(model, target, (1, 3, 12, 16), "m", threads=1, warmup=1, runs=2)
    assert rec.runtime == {"executorch": "executorch", "tflite": "litert"}[target]
    assert rec.delegate == "xnnpack" and rec.stats.count == 2 and rec.artifact.startswith("m.")


@pytest.mark.parametrize(
    "upsampler, op",
    [
        ("pixelshuffle", "DepthToSpace"),
        ("depth_to_space", "DepthToSpace"),
        ("transposed_conv", "ConvTranspose"),
    ],
)
def test_the_tables_shuffle_layer_is_timed_as_the_variants_op(tmp_path, upsampler, op):
    """A one-op shuffle has no conv to reorder: it is timed as the op the variant's graph holds
    (the rewrite failed on it for every target whose default is not the plain shuffle, LiteRT fp32)."""
    onnx = pytest.importorskip("onnx")
    from edgesr.profile.host import _export  # the artifact profile_module times (and then deletes)

    key = LayerKey("pixel_shuffle", 32, 8, 2, 6, 7)
    module, shape = layer_module(key)
    path, plan, _ = _export(module, "onnx", shape, tmp_path, "ps", upsampler=upsampler)
    assert plan.upsampler == upsampler
    assert op in {n.op_type for n in onnx.load(str(path)).graph.node}
    rec = profile_module(module, "onnx", shape, "ps", threads=1, warmup=1, runs=2, layer=key,
                         upsampler=upsampler)  # fmt: skip
    assert rec.layer == key and rec.stats.count == 2


@pytest.mark.slow
def test_the_tables_shuffle_layer_on_litert():
    pytest.importorskip("ai_edge_litert")
    key = LayerKey("pixel_shuffle", 32, 8, 2, 6, 7)
    module, shape = layer_module(key)
    rec = profile_module(module, "tflite", shape, "ps", threads=1, warmup=1, runs=2, layer=key)
    assert rec.layer == key and rec.upsampler == "depth_to_space"


def test_core_ml_is_refused_off_macos_before_converting():
    import sys

    if sys.platform == "darwin":
        pytest.skip("Core ML runs here")
    from edgesr.profile.host import runtime_info

    with pytest.raises(RuntimeError, match="Core ML artifacts run only on macOS/iOS"):
        runtime_info("coreml")


def test_re_measured_layer_replaces_its_entry(tmp_path):
    key = LayerKey("conv+relu", 8, 8, 3, 12, 16)
    for sha, ms in (("a" * 64, 1.0), ("b" * 64, 2.0)):  # a fresh one-op network each time
        save_records(
            "host", [_rec("layer", ms, layer=key, sha256=sha)], "layers_ort", tmp_path, kind="layers"
        )
    (rec,) = load_profile(tmp_path / "host" / "layers_ort.yaml").records
    assert rec.stats.median_ms == 2.0 and rec.layer == key


def test_pytorch_runtime_version_is_a_plain_string_profiles_can_store():
    import yaml

    from edgesr.profile.host import runtime_info

    version = runtime_info("pytorch")[1]
    assert type(version) is str  # torch.__version__ is a TorchVersion, which yaml.safe_dump refuses
    yaml.safe_dump({"runtime_version": version})
