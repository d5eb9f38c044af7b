"""From an empty disk to a paper-protocol run, as a researcher does it on a fresh GPU machine:

    edgesr data fetch div2k-valid benchmarks    (here: tiny archives with the real layouts)
    edgesr train csd_edsr_x2_w025 ...            (here: shrunk to seconds; its zoo:edsr_x2 teacher
                                                   comes from the same loopback server)

Nothing leaves 127.0.0.1; the archives and the teacher are pinned in the catalog/zoo to what is served.
The run trains on `div2k-valid` (the recipe says `div2k`: the same resolution, another split) so the
served archives stay four small zips; its validation sets are the recipe's own names.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import tarfile

import pytest
from sr_archives import members, png, zip_bytes
from zoo_teachers import serve

from edgesr.cli import main
from edgesr.data import catalog


def _serve_data(server, monkeypatch) -> None:
    for name in catalog.DATASETS["div2k-valid"].archives:
        real = catalog.ARCHIVES[name]
        data = zip_bytes(members(real, 3, hr=96))
        server.files[name] = data
        monkeypatch.setitem(catalog.ARCHIVES, name, dataclasses.replace(
            real, size=len(data), sha256=hashlib.sha256(data).hexdigest(), images=3))  # fmt: skip
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for s in ("Set5", "Set14", "B100", "Urban100"):
            for name, data in ((f"benchmark/{s}/HR/img.png", png(1, 48)),
                               (f"benchmark/{s}/LR_bicubic/X2/imgx2.png", png(2, 24))):  # fmt: skip
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    tar = buf.getvalue()
    server.files["benchmark.tar"] = tar
    real = catalog.ARCHIVES["benchmark.tar"]
    monkeypatch.setitem(catalog.ARCHIVES, "benchmark.tar",
                        dataclasses.replace(real, md5=hashlib.md5(tar).hexdigest(), images=8))  # fmt: skip


@pytest.mark.slow
def test_fetch_then_the_csd_paper_recipe_runs_from_its_zoo_teacher(loopback_server, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # ./data is the default data root, as on a fresh machine
    monkeypatch.setenv("EDGESR_DATA_MIRROR", loopback_server.base)
    _serve_data(loopback_server, monkeypatch)
    serve(monkeypatch, loopback_server, "edsr_x2", n_feats=32, n_resblocks=2)

    assert main(["data", "fetch", "div2k-valid", "benchmarks"]) == 0
    assert (tmp_path / "data/DIV2K/DIV2K_valid_LR_bicubic/X2/0801x2.png").is_file()
    assert (tmp_path / "data/benchmark/Urban100/HR/img.png").is_file()

    shrink = [  # the paper recipe as written, shrunk to seconds: data by name, teacher from the zoo
        "model.args.n_feats=32", "model.args.n_resblocks=2", "data.train=div2k-valid",
        "train.steps=2", "data.patch_size=16", "data.batch_size=2", "data.workers=0",
        "train.csd.negatives=1", "train.val_every=2", "train.checkpoint_every=2", "eval.self_ensemble=false",
    ]  # fmt: skip
    assert main(["train", "csd_edsr_x2_w025", "--run-dir", "runs/csd", *shrink]) == 0
    status = json.loads((tmp_path / "runs/csd/status.json").read_text())
    assert status["state"] == "completed"
    results = json.loads((tmp_path / "runs/csd/results.json").read_text())
    evaluated = {(r["dataset"], r["method"]) for r in results["rows"]}
    for s in ("Set5", "Set14", "B100", "Urban100"):  # the benchmark names resolved to the fetched sets
        assert {(s, "bicubic"), (s, "teacher (w=1)"), (s, "student w=0.25")} <= evaluated
    downloads = [path for path, _ in loopback_server.requests]
    assert downloads.count("edsr_x2-0edfb8a3.pt") == 1 and downloads.count("benchmark.tar") == 1
