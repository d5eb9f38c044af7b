"""`--via aihub` against a fake `qai_hub` (tests/profile/fake_qai_hub.py): no network, no real phones.

The artifacts are stand-in .tflite files with manifests written the way `edgesr export` writes them
(the farm path never runs them here: the fake serves the profiles and outputs).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_qai_hub import FakeHub

from edgesr.cli import main
from edgesr.devices import load_device
from edgesr.export.manifest import FORMAT, artifact_sha256, checked_artifact, read_manifest, write_manifest
from edgesr.models import build_model, count_macs, count_params, materialize
from edgesr.profile import aihub
from edgesr.profile.aihub_numerics import on_device_numerics
from edgesr.profile.store import device_records
from edgesr.student import load_student
from edgesr.train.checkpoint import CheckpointMeta, save_checkpoint

WIDTHS = (0.25, 0.5, 1.0)
TOKEN = "aihub-TOKEN-0f9e8d7c6b5a"
S23 = """\
name: galaxy_s23
soc: Qualcomm Snapdragon 8 Gen 2
os: Android 13+
transport: adb
runtimes:
  - {name: litert, delegates: [xnnpack, gpu, qnn]}
resolution: {width: 320, height: 180}
budget_ms: 33.3
farm: {service: aihub, name: "Samsung Galaxy S23 (Family)"}
"""


def fake_tflite(folder: Path, full: torch.nn.Module, width: float, hw: tuple[int, int], ckpt: Path) -> Path:
    """A stand-in .tflite (bytes the farm never runs here) and its manifest, as export writes it."""
    h, w = hw
    net = materialize(full, width) if width < 1 else full
    path = folder / f"edsr_x2_w{width:g}_{h}x{w}_fp32.tflite"
    path.write_bytes(b"\x1c\x00\x00\x00TFL3" + f"edsr {width} {h}x{w}".encode())
    io = {"layout": "NCHW", "range": [0.0, 1.0], "dtype": "float32", "color": "RGB"}
    manifest = {
        "format": FORMAT, "target": "tflite", "precision": "fp32",
        "artifact": {"file": path.name, "sha256": artifact_sha256(path)},
        "model": {"name": "edsr", "args": full.arch["args"], "width": width, "trained_widths": list(WIDTHS),
                  "scale": 2, "params": count_params(net), "macs": count_macs(net, hw),
                  "macs_input": [1, 3, h, w]},
        "graph": {"upsampler": "depth_to_space", "delegate": None}, "quantization": None,
        "input": {"name": "lr", "shape": [1, 3, h, w], "dynamic": False, **io},
        "output": {"name": "sr", "shape": [1, 3, 2 * h, 2 * w], **io},
        "source": {"checkpoint": str(ckpt), "checkpoint_sha256": None, "recipe_hash": "r", "step": 1},
        "tools": {"edgesr": "0.1.0"},
        "verification": {"runtime": "ai-edge-litert 2.3.0", "reference": "PyTorch eager, float32",
                         "psnr_db": 61.2, "max_abs_diff": 1e-6, "threshold_db": 50.0, "passed": True},
        "delegation": {"ops": {"CONV_2D": 5, "DEPTH_TO_SPACE": 1}},
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }  # fmt: skip
    write_manifest(path, manifest)
    checked_artifact(path)  # a manifest `edgesr profile run` accepts
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("exports")
    torch.manual_seed(0)
    model = build_model("edsr", scale=2, n_resblocks=1, n_feats=32)
    save_checkpoint(root / "ckpt", model, CheckpointMeta(model.arch, 2, WIDTHS, None, "r", 1), None)
    return {
        "widths": [fake_tflite(root, model, w, (180, 320), root / "ckpt") for w in WIDTHS],
        "small": fake_tflite(root, model, 0.5, (24, 32), root / "ckpt"),
        "ckpt": root / "ckpt",
    }


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    fake = FakeHub(TOKEN, ms=lambda width, device: 40.0 * width * (1.5 if "S23" in device else 1.0))
    monkeypatch.setitem(sys.modules, "qai_hub", fake)
    monkeypatch.setattr(aihub, "poll_sleep", lambda s: None)
    return fake


@pytest.fixture
def s23(tmp_path: Path) -> Path:
    path = tmp_path / "galaxy_s23.yaml"
    path.write_text(S23)
    return path


def sweep(exported: dict, s23: Path, root: Path, *extra: str) -> int:
    arts = [str(a) for a in exported["widths"]]
    return main(["profile", "sweep", "--via", "aihub", "--artifacts", *arts, "--device", "galaxy_s24",
                 "--device", str(s23), "--profiles", str(root), "--poll-s", "0", *extra])  # fmt: skip


def no_token_anywhere(capsys: pytest.CaptureFixture, *folders: Path) -> None:
    out = capsys.readouterr()
    assert TOKEN not in out.out + out.err
    for folder in folders:
        for f in folder.rglob("*"):
            assert not f.is_file() or TOKEN.encode() not in f.read_bytes(), f


def test_sweep_3_widths_x_2_devices_ingests_6_profiles_and_selects_a_width(
    exported, hub, s23, tmp_path, capsys
):
    root = tmp_path / "prof"
    assert sweep(exported, s23, root) == 0
    assert hub.submitted() == 6
    assert sum(1 for name, _ in hub.calls if name == "upload_model") == 3  # each artifact uploaded once
    err = capsys.readouterr().err
    assert (
        "MEASURING_PERFORMANCE" in err and "SUCCESS 6" in err
    )  # the progress display saw the states advance
    for device, farm in (
        ("galaxy_s24", "Samsung Galaxy S24 (Family)"),
        ("galaxy_s23", "Samsung Galaxy S23 (Family)"),
    ):
        recs = device_records(device, root)
        assert len(recs) == 3 and {r.model.width for r in recs} == set(WIDTHS)
        for r in recs:
            assert r.method == "aihub:profile" and r.runtime == "litert" and r.delegate == "qnn"
            assert r.resolution == "320x180" and r.precision == "fp32" and r.threads is None
            job = next(
                j for j, v in hub.jobs.items() if v["device"] == farm and v["model"].path.name == r.artifact
            )
            assert (
                f"Qualcomm AI Hub job {job}" in r.notes
                and "qai-hub 0.39.1" in r.notes
                and "aihub-2026.11" in r.notes
            )
            assert (root / device / "aihub" / f"{job}.json").is_file()  # the raw profile, for provenance
        by_width = {r.model.width: r.stats.median_ms for r in recs}
        assert by_width[0.25] < by_width[0.5] < by_width[1.0]
    # 40 ms x width on the S24, x1.5 on the S23: width 0.5 (20 / 30 ms) is the widest under 33.3 ms
    for device in ("galaxy_s24", str(s23)):
        code = main(
            ["select-width", "--device", device, "--profiles", str(root), "--plot", str(tmp_path / "p.png")]
        )
        assert code == 0
        assert "chosen: width 0.5 (16 channels)" in capsys.readouterr().err
    no_token_anywhere(capsys, root)


def test_rerun_reuses_the_submitted_jobs(exported, hub, s23, tmp_path, capsys):
    root = tmp_path / "prof"
    assert sweep(exported, s23, root) == 0
    state = json.loads((root / aihub.STATE_FILE).read_text())
    assert state["format"] == aihub.STATE_FORMAT and len(state["jobs"]) == 6
    calls = len(hub.calls)
    assert sweep(exported, s23, root) == 0
    again = [name for name, _ in hub.calls[calls:]]
    assert "upload_model" not in again and not any(n.startswith("submit_") for n in again)
    assert "reusing 6 job(s) submitted earlier" in capsys.readouterr().err
    assert len(device_records("galaxy_s24", root)) == 3  # the same records, replaced in place
    assert sweep(exported, s23, root, "--new-jobs") == 0 and hub.submitted() == 12


def test_a_failed_job_prints_the_reason_keeps_the_others_and_exits_1(exported, hub, s23, tmp_path, capsys):
    root = tmp_path / "prof"
    hub.fail[(exported["widths"][2].name, "Samsung Galaxy S23 (Family)")] = "Out of memory on the NPU (HTP)"
    assert sweep(exported, s23, root) == 1
    err = capsys.readouterr().err
    line = next(ln for ln in err.splitlines() if ln.startswith("failed:"))
    assert "edsr_x2_w1_180x320_fp32.tflite on Samsung Galaxy S23 (Family) (galaxy_s23)" in line
    assert "failed: Out of memory on the NPU (HTP)" in line
    assert len(device_records("galaxy_s24", root)) == 3 and len(device_records("galaxy_s23", root)) == 2
    assert len(json.loads((root / aihub.STATE_FILE).read_text())["jobs"]) == 5  # the failed one is dropped
    del hub.fail[(exported["widths"][2].name, "Samsung Galaxy S23 (Family)")]
    assert sweep(exported, s23, root) == 0 and hub.submitted() == 7  # a re-run submits only the failed one
    assert len(device_records("galaxy_s23", root)) == 3


def test_missing_token_is_one_line_and_nothing_is_submitted(exported, hub, s23, tmp_path, capsys):
    hub.config_token = None
    assert sweep(exported, s23, tmp_path / "prof") == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: {aihub.TOKEN_HELP}"
    assert (
        "qai-hub configure --api_token" in err and hub.submitted() == 0 and not (tmp_path / "prof").exists()
    )


def test_interrupted_wait_keeps_the_jobs_and_names_the_resume_command(
    exported, hub, s23, tmp_path, capsys, monkeypatch
):
    root = tmp_path / "prof"

    def ctrl_c(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(aihub, "poll_sleep", ctrl_c)
    assert sweep(exported, s23, root) == 130
    err = capsys.readouterr().err
    assert "stopped waiting for 6 Qualcomm AI Hub job(s)" in err
    resume = err.split("resume with: ")[1].strip()
    assert (
        resume.startswith("edgesr profile sweep --via aihub --artifacts ") and "--device galaxy_s24" in resume
    )
    assert len(json.loads((root / aihub.STATE_FILE).read_text())["jobs"]) == 6
    assert device_records("galaxy_s24", root) == []
    monkeypatch.setattr(aihub, "poll_sleep", lambda s: None)
    argv = resume.split()[1:]  # the printed command, as given (no spaces in these paths)
    assert main([*argv, "--poll-s", "0"]) == 0 and hub.submitted() == 6  # resumed: nothing paid twice
    assert len(device_records("galaxy_s24", root)) == 3 and len(device_records("galaxy_s23", root)) == 3


def test_unknown_farm_device_lists_close_names(exported, hub, tmp_path, capsys):
    code = main(["profile", "run", str(exported["widths"][0]), "--device", "galaxy_s24", "--via", "aihub",
                 "--farm-device", "Samsung Galaxy S24", "--profiles", str(tmp_path)])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert "no device 'Samsung Galaxy S24'; close: 'Samsung Galaxy S24 (Family)'" in err
    assert "edgesr devices ls --farm aihub" in err and hub.submitted() == 0


def test_rate_limit_keeps_the_jobs_submitted_so_far(exported, hub, s23, tmp_path, capsys):
    root = tmp_path / "prof"
    hub.rate_limit_after = 4
    assert sweep(exported, s23, root) == 1
    err = capsys.readouterr().err
    assert "rate-limited" in err and "the 4 job(s) submitted so far are kept" in err
    hub.rate_limit_after = None
    assert sweep(exported, s23, root) == 0 and hub.submitted() == 6

    # the client's own rate-limit handling (a box on stdout, a sleep of up to 10 minutes) is off
    submits = [kw for name, kw in hub.calls if name.startswith("submit_")]
    assert submits and all(kw["retry"] is False for kw in submits)


def test_two_device_files_for_one_farm_phone_are_refused(exported, hub, tmp_path, capsys):
    twin = tmp_path / "galaxy_s24_twin.yaml"
    shipped = Path("devices/galaxy_s24.yaml").read_text()
    twin.write_text(shipped.replace("name: galaxy_s24", "name: galaxy_s24_twin"))
    arts = [str(a) for a in exported["widths"]]
    code = main(["profile", "sweep", "--via", "aihub", "--artifacts", *arts, "--device", "galaxy_s24",
                 "--device", str(twin), "--profiles", str(tmp_path / "prof"), "--poll-s", "0"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "'galaxy_s24' and 'galaxy_s24_twin' both name the farm device" in err
    assert hub.submitted() == 0


def test_network_error_is_one_line(exported, hub, s23, tmp_path, capsys):
    hub.network_down = True
    assert sweep(exported, s23, tmp_path / "prof") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: could not reach Qualcomm AI Hub while listing its devices")
    assert "Could not connect to Qualcomm AI Hub." in err and len(err.splitlines()) == 1


def test_without_qai_hub_the_message_names_the_extra(exported, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "qai_hub", None)  # import qai_hub -> ImportError
    code = main(["devices", "ls", "--farm", "aihub"])
    want = '--farm aihub needs the Qualcomm AI Hub client (qai-hub): pip install "edgesr[aihub]"'
    assert code == 1 and want in capsys.readouterr().err
    code = main(["profile", "run", str(exported["widths"][0]), "--device", "galaxy_s24", "--via", "aihub",
                 "--profiles", str(tmp_path)])  # fmt: skip
    assert code == 1 and 'pip install "edgesr[aihub]"' in capsys.readouterr().err


def test_devices_ls_farm_lists_chipsets(hub, capsys):
    assert main(["devices", "ls", "--farm", "aihub", "--filter", "8gen3"]) == 0
    out = capsys.readouterr().out
    assert "Samsung Galaxy S24 (Family)" in out and "qualcomm-snapdragon-8gen3" in out and "S23" not in out
    assert load_device("galaxy_s24").farm.name == "Samsung Galaxy S24 (Family)"


def test_on_device_numerics_are_recorded_in_the_manifest(exported, hub, tmp_path, capsys):
    art = exported["small"]
    net = load_student(exported["ckpt"], 0.5).net
    noise = np.random.default_rng(0)

    def phone(x: np.ndarray) -> np.ndarray:  # PyTorch's output with fp16-sized errors, as an NPU gives
        with torch.no_grad():
            y = net(torch.from_numpy(x)).numpy()
        return (y + noise.normal(0, 2e-3, y.shape)).astype(np.float16).astype(np.float32)

    hub.output = phone
    code = main(["profile", "run", str(art), "--device", "galaxy_s24", "--via", "aihub", "--inference",
                 "--profiles", str(tmp_path / "prof"), "--poll-s", "0"])  # fmt: skip
    assert code == 0
    (inference,) = [v for v in hub.jobs.values() if v["kind"] == "inference"]
    (x,) = inference["inputs"]["lr"]
    assert x.shape == (1, 3, 24, 32) and x.dtype == np.float32
    manifest, _ = read_manifest(art)  # still a valid manifest, the artifact's sha256 unchanged
    checked_artifact(art)
    e = manifest["on_device"]["aihub:Samsung Galaxy S24 (Family)"]
    assert e["device"] == "galaxy_s24" and e["job_id"].startswith("ji") and e["runtime"] == "litert"
    assert 40 < e["psnr_db"] < 70 and 0 < e["max_abs_diff"] < 0.05
    assert 40 < e["y_psnr_vs_pytorch_db"] < 80
    assert (
        isinstance(e["y_psnr_vs_hr_db"], float)
        and abs(e["y_psnr_vs_hr_db"] - e["pytorch_y_psnr_vs_hr_db"]) < 0.5
    )
    assert manifest["verification"]["psnr_db"] == 61.2  # the host figures stay beside
    assert "on Samsung Galaxy S24 (Family):" in capsys.readouterr().err
    calls = hub.submitted()
    assert (
        on_device_numerics(art, load_device("galaxy_s24"), root=tmp_path / "prof", poll_s=0)["job_id"]
        == e["job_id"]
    )
    assert hub.submitted() == calls  # the inference job is reused too
