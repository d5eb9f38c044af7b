"""The teacher zoo: `zoo:NAME` fetched once from a mirror, hash-prefix and layout checked before it
enters the cache, loaded through the official-checkpoint import; `edgesr zoo ls | fetch`.

Every download comes from the loopback server (tests/zoo_teachers.py); nothing reaches the internet.
"""

from __future__ import annotations

import argparse
import hashlib
import re
from pathlib import Path

import pytest
import torch
from zoo_teachers import official_state, saved, serve, tiny

from edgesr.cli import zoo as zoo_cli
from edgesr.cli.common import make_console
from edgesr.download import ChecksumError
from edgesr.errors import CheckpointError, NotFoundError, RecipeError, UnknownNameError
from edgesr.models import build_model, zoo
from edgesr.models.official import load_official
from edgesr.recipe import load_recipe
from edgesr.train.checkpoint import convert_official, read_meta
from edgesr.train.modes import TrainingError, load_teacher


def _cache_files() -> list[str]:
    root = zoo.zoo_dir()
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.is_dir() else []


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    zoo_cli.add_parsers(parser.add_subparsers())
    args = parser.parse_args(["zoo", *argv])
    return args.run(args, make_console())


# --- the shipped table ---------------------------------------------------------------------------


def test_shipped_entries_pin_the_hash_in_their_file_name_and_the_readme_params() -> None:
    readme_params = {  # EDSR-PyTorch README; RCAN paper (~15.6M at x4)
        "edsr_baseline_x2": 1.37, "edsr_baseline_x3": 1.55, "edsr_baseline_x4": 1.52,
        "edsr_x2": 40.7, "edsr_x3": 43.7, "edsr_x4": 43.1, "rcan_x4": 15.6,
    }  # fmt: skip
    for name, t in zoo.ZOO.items():
        assert t.name == name and f"x{t.scale}" in name
        assert set(t.psnr) >= {"Set5", "Set14", "B100", "Urban100"} and t.psnr_source
        if t.url is None:
            assert t.manual and "no public direct URL" in t.manual and t.file in t.manual
            continue
        assert t.url.endswith("/" + t.file) and t.url.startswith("https://")
        assert (
            re.fullmatch(rf"{name}-[0-9a-f]{{8}}\.pt", t.file) and t.file.split("-")[1][:8] == t.sha256_prefix
        )
    for name, millions in readme_params.items():
        assert zoo.teacher_params(zoo.ZOO[name]) / 1e6 == pytest.approx(millions, abs=0.06), name


def test_unknown_name_lists_the_valid_ones_and_the_closest(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(
        UnknownNameError, match=r"zoo:edsr_x5\. Did you mean zoo:edsr_x4\? Valid: zoo:edsr_base"
    ):
        zoo.lookup("zoo:edsr_x5")
    with pytest.raises(RecipeError, match=r"train\.init: unknown zoo teacher zoo:rcan_x8\..*zoo:rcan_x4"):
        load_recipe("quickstart", ["train.init=zoo:rcan_x8"])
    with pytest.raises(
        RecipeError, match=r"train\.init: zoo:edsr_x4 is a x4 teacher, but the recipe's scale is 2"
    ):
        load_recipe("quickstart", ["train.init=zoo:edsr_x4"])
    assert load_recipe("quickstart", ["train.init=zoo:edsr_baseline_x2"]).train.init == "zoo:edsr_baseline_x2"


# --- fetch: verify, cache, reuse --------------------------------------------------------------


def test_fetch_downloads_once_and_loads_like_the_official_import(
    loopback_server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    entry, data = serve(monkeypatch, loopback_server, "edsr_baseline_x2")
    seen: list[tuple[int, int | None]] = []
    path = zoo.fetch("zoo:edsr_baseline_x2", progress=lambda done, total: seen.append((done, total)))
    assert path == zoo.zoo_dir() / "edsr_baseline_x2-1bc95232.pt" and path.read_bytes() == data
    assert seen and seen[-1] == (len(data), len(data))
    assert _cache_files() == [entry.file]  # nothing staged is left beside it
    assert [r[0] for r in loopback_server.requests] == [entry.file]

    model, info = zoo.load_zoo("edsr_baseline_x2")  # a second use: from the cache, no request
    assert zoo.fetch("edsr_baseline_x2") == path
    assert len(loopback_server.requests) == 1
    assert info["zoo"] is entry and info["args"]["n_feats"] == 16
    (tmp_path / "copy.pt").write_bytes(data)
    ref, _ = load_official(tmp_path / "copy.pt")
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), ref.eval()(x))


def test_wrong_hash_prefix_is_named_and_nothing_is_cached(loopback_server, monkeypatch) -> None:
    entry, data = serve(monkeypatch, loopback_server, "edsr_x2", prefix="0000abcd")
    digest = hashlib.sha256(data).hexdigest()
    with pytest.raises(ChecksumError) as e:
        zoo.fetch("edsr_x2")
    msg = str(e.value)
    assert "\n" not in msg and entry.file in msg and digest in msg and "does not start with 0000abcd" in msg
    assert "deleted and not cached" in msg
    assert _cache_files() == []
    assert zoo.cached(entry) is None


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            b"<html>404 Not Found</html>",
            r"edsr_baseline_x2-1bc95232\.pt: cannot read as a state dict of tensors",
        ),
        (
            saved({"weight": torch.zeros(3)}),
            "missing key 'head.0.weight'; not an official EDSR/RCAN checkpoint",
        ),
        (saved(official_state("edsr", scale=3)), "scale=2 given but the upsampler convs give x3"),
        (saved(official_state("edsr", scale=2, n_feats=24)), r"n_feats=24 \(expected 16\)"),
    ],
    ids=["html", "other-tensors", "wrong-scale", "wrong-width"],
)
def test_a_file_that_is_not_the_entrys_checkpoint_is_refused(
    loopback_server, monkeypatch, data: bytes, expected: str
) -> None:
    serve(monkeypatch, loopback_server, "edsr_baseline_x2", data=data)  # the hash matches: a bad upload
    with pytest.raises(CheckpointError, match=expected) as e:
        zoo.fetch("edsr_baseline_x2")
    assert str(e.value).startswith("zoo:edsr_baseline_x2: ") and "\n" not in str(e.value)
    assert "deleted and not cached" in str(e.value)
    assert _cache_files() == []


def test_a_corrupted_cache_file_is_reported_not_used(loopback_server, monkeypatch) -> None:
    serve(monkeypatch, loopback_server, "edsr_baseline_x4")
    path = zoo.fetch("edsr_baseline_x4")
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(
        ChecksumError, match=rf"cached {re.escape(str(path))} has sha256 .* delete it and run"
    ):
        zoo.fetch("edsr_baseline_x4")
    assert len(loopback_server.requests) == 1


def test_an_entry_without_a_public_url_says_how_to_get_it_and_reads_a_copied_file(
    monkeypatch: pytest.MonkeyPatch, loopback_server
) -> None:
    monkeypatch.setenv(zoo.MIRROR_ENV, loopback_server.base)  # no hash to check a mirror's copy against
    entry = tiny("rcan_x4")
    monkeypatch.setitem(zoo.ZOO, "rcan_x4", entry)
    with pytest.raises(NotFoundError, match=r"zoo:rcan_x4: no public direct URL: .*dropbox.*RCAN_BIX4\.pt"):
        zoo.fetch("rcan_x4")
    assert loopback_server.requests == []
    zoo.zoo_dir().mkdir(parents=True)
    (zoo.zoo_dir() / "RCAN_BIX4.pt").write_bytes(saved(official_state("rcan", **entry.args)))
    model, info = zoo.load_zoo("zoo:rcan_x4")
    assert info["arch"] == "rcan" and model.scale == 4


# --- where zoo: is used ----------------------------------------------------------------------


def test_train_init_zoo_resolves_to_the_cached_teacher(loopback_server, monkeypatch) -> None:
    serve(monkeypatch, loopback_server, "edsr_x2")  # res_scale 0.1, as the full EDSR
    model = build_model("edsr", scale=2, n_resblocks=2, n_feats=16, res_scale=0.1)
    calls: list[int] = []
    teacher = load_teacher("zoo:edsr_x2", model, progress=lambda done, total: calls.append(done))
    assert teacher.arch == model.arch and calls
    other = build_model("edsr", scale=2, n_resblocks=2, n_feats=16)  # res_scale 1.0: not this teacher
    with pytest.raises(
        TrainingError, match=r"train\.init=zoo:edsr_x2 \(.*edsr_x2-0edfb8a3\.pt\): checkpoint holds"
    ):
        load_teacher("zoo:edsr_x2", other)
    assert len(loopback_server.requests) == 1


def test_convert_records_the_zoo_source(loopback_server, monkeypatch, tmp_path: Path) -> None:
    serve(monkeypatch, loopback_server, "edsr_baseline_x3")
    out = convert_official("zoo:edsr_baseline_x3", tmp_path / "teacher")
    meta = read_meta(out)
    assert meta.source == "zoo:edsr_baseline_x3" and meta.scale == 3 and meta.widths == (1.0,)


# --- the CLI ---------------------------------------------------------------------------------


def test_zoo_ls_lists_names_params_reported_psnr_and_cache_state(
    loopback_server, monkeypatch, capsys
) -> None:
    serve(monkeypatch, loopback_server, "edsr_x4")
    assert _run("fetch", "zoo:edsr_x4") == 0
    assert "zoo:edsr_x4: " in capsys.readouterr().out
    assert _run("ls") == 0
    out = capsys.readouterr().out
    rows = {line.split()[1]: line for line in out.splitlines() if line.startswith("│ zoo:")}
    assert list(rows) == [f"zoo:{n}" for n in zoo.ZOO]
    assert re.search(r"x4 .* 32\.46 .* 28\.80 .* 27\.71 .* 26\.64 .* yes", rows["zoo:edsr_x4"])
    assert re.search(r"40\.73M .* 38\.11 .* no ", rows["zoo:edsr_x2"])
    assert "37.98*" in rows["zoo:edsr_baseline_x2"] and "no public URL" in rows["zoo:rcan_x4"]
    assert "* not published by the EDSR authors" in out and "arXiv:1807.02758" in out


def test_zoo_fetch_checks_every_name_before_downloading(loopback_server, monkeypatch) -> None:
    serve(monkeypatch, loopback_server, "edsr_x3")
    with pytest.raises(UnknownNameError, match="edsr_x33"):
        _run("fetch", "edsr_x3", "edsr_x33")
    assert loopback_server.requests == []


def test_a_distill_run_from_a_zoo_teacher_downloads_it_once(
    tiny_photos, loopback_server, monkeypatch, tmp_path
):
    from rich.console import Console

    from edgesr.recipe import Recipe, from_dict
    from edgesr.train.trainer import train

    serve(monkeypatch, loopback_server, "edsr_baseline_x2")
    cfg = {
        "name": "zoo-distill", "scale": 2,
        "model": {"name": "edsr", "args": {"n_resblocks": 2, "n_feats": 16}},
        "data": {"train": str(tiny_photos["train"]), "val": [str(tiny_photos["val"])], "patch_size": 8,
                 "batch_size": 2, "workers": 0},
        "train": {"mode": "distill", "widths": [0.5], "init": "zoo:edsr_baseline_x2", "steps": 2,
                  "losses": [{"name": "output_kd"}], "checkpoint_every": 2, "val_every": 2, "log_every": 1},
    }  # fmt: skip
    console = Console(record=True, width=200)
    result = train(from_dict(Recipe, cfg), tmp_path / "run", console=console)
    assert result.steps == 2
    assert re.search(r"downloading zoo:edsr_baseline_x2: [\d.]+ / [\d.]+ MB", console.export_text())
    assert len(loopback_server.requests) == 1
    train(from_dict(Recipe, cfg), tmp_path / "run2", console=console)  # the second run: from the cache
    assert len(loopback_server.requests) == 1
