"""`edgesr data fetch` end to end against a loopback server: real archive layouts, checksums,
resume, zip-slip, interruption, the user's own folders, the catalog table itself."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import pytest
from sr_archives import members as _members
from sr_archives import png as _png
from sr_archives import tar as _tar
from sr_archives import zip_bytes as _zip

from edgesr.cli import main
from edgesr.data import catalog, fetch, open_dataset
from edgesr.data.fetch import MARKER_DIR, UnsafeArchiveError
from edgesr.download import ChecksumError, DownloadError


@pytest.fixture
def served(loopback_server, monkeypatch, tmp_path):
    """Serve `div2k-valid` (4 zips: HR + LR x2/x3/x4, 3 images each) from the loopback server, the
    catalog pinned to what it serves; EDGESR_DATA_MIRROR points there and EDGESR_DATA at tmp."""
    names = catalog.DATASETS["div2k-valid"].archives
    for name in names:
        real = catalog.ARCHIVES[name]
        data = _zip(_members(real, 3))
        loopback_server.files[name] = data
        pinned = dataclasses.replace(real, size=len(data), sha256=hashlib.sha256(data).hexdigest(), images=3)
        monkeypatch.setitem(catalog.ARCHIVES, name, pinned)
    monkeypatch.setenv("EDGESR_DATA_MIRROR", loopback_server.base)
    monkeypatch.setenv("EDGESR_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


def _pin(monkeypatch, loopback_server, name: str, data: bytes, images: int, **kw) -> None:
    loopback_server.files[name] = data
    real = catalog.ARCHIVES[name]
    monkeypatch.setitem(catalog.ARCHIVES, name, dataclasses.replace(
        real, size=len(data), sha256=hashlib.sha256(data).hexdigest(), md5=None, images=images, **kw
    ))  # fmt: skip


def _die_on_second_move(monkeypatch):
    """Make the process "die" (KeyboardInterrupt) as fetch moves its second folder out of staging;
    returns the real os.rename to put back."""
    real_rename, calls = fetch.os.rename, 0

    def rename_once(src, dst):
        nonlocal calls
        if "staging-" in str(src):
            calls += 1
            if calls == 2:
                raise KeyboardInterrupt
        real_rename(src, dst)

    monkeypatch.setattr(fetch.os, "rename", rename_once)
    return real_rename


def test_fetch_end_to_end_lands_in_the_layout_training_reads(served, loopback_server):
    results = fetch.fetch(["div2k-valid"], log=lambda m: None)
    assert [r.status for r in results] == ["fetched"] * 4
    hr = sorted(p.name for p in (served / "DIV2K/DIV2K_valid_HR").iterdir())
    assert hr == ["0801.png", "0802.png", "0803.png"]
    pairs = open_dataset("div2k-valid", 4)  # the catalog name, as a recipe writes it
    assert [p.name for p in pairs] == ["0801", "0802", "0803"]
    assert all(p.lr_path is not None and p.lr_path.name == f"{p.name}x4.png" for p in pairs)
    marker = json.loads((served / MARKER_DIR / "DIV2K_valid_HR.zip.json").read_text())
    assert marker["complete"] and marker["images"] == 3 and marker["sha256"] == results[0].sha256
    assert marker["pinned"].startswith("size and sha256")
    # the archives are gone, nothing is left in staging
    left = sorted(p.name for p in (served / MARKER_DIR).iterdir() if not p.name.endswith(".json"))
    assert left == ["downloads"]
    assert not any((served / MARKER_DIR / "downloads").iterdir())


def test_second_fetch_does_nothing_and_says_so(served, loopback_server, capsys):
    fetch.fetch(["div2k-valid"], log=lambda m: None)
    before = len(loopback_server.requests)
    mtime = (served / "DIV2K/DIV2K_valid_HR/0801.png").stat().st_mtime_ns
    assert main(["data", "fetch", "div2k-valid"]) == 0
    out = "".join(capsys.readouterr())
    assert "already in place" in out and "0 archive(s) fetched, 4 already in place" in out
    assert len(loopback_server.requests) == before
    assert (served / "DIV2K/DIV2K_valid_HR/0801.png").stat().st_mtime_ns == mtime


def test_cut_download_is_resumed_with_range(served, loopback_server):
    loopback_server.drop_after["DIV2K_valid_HR.zip"] = 200  # the server closes the connection mid-way
    fetch.fetch(["div2k-valid"], log=lambda m: None)
    hr = [r for r in loopback_server.requests if r[0] == "DIV2K_valid_HR.zip"]
    assert hr == [("DIV2K_valid_HR.zip", None), ("DIV2K_valid_HR.zip", "bytes=200-")]
    assert len(list((served / "DIV2K/DIV2K_valid_HR").iterdir())) == 3


def test_server_without_range_still_completes(served, loopback_server):
    loopback_server.ranges = False
    loopback_server.drop_after["DIV2K_valid_HR.zip"] = 200
    fetch.fetch(["div2k-valid"], log=lambda m: None)
    assert len(list((served / "DIV2K/DIV2K_valid_HR").iterdir())) == 3


def test_checksum_mismatch_keeps_the_download_and_touches_nothing(served, loopback_server, capsys):
    loopback_server.files["DIV2K_valid_HR.zip"] = loopback_server.files["DIV2K_valid_HR.zip"][:-1] + b"!"
    assert main(["data", "fetch", "div2k-valid"]) == 1
    err = capsys.readouterr().err
    want = catalog.ARCHIVES["DIV2K_valid_HR.zip"].sha256
    got = hashlib.sha256(loopback_server.files["DIV2K_valid_HR.zip"]).hexdigest()
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]  # progress lines come before it
    assert f"DIV2K_valid_HR.zip: sha256 mismatch: expected {want}, got {got}" in line
    assert not (served / "DIV2K").exists()
    assert (served / MARKER_DIR / "downloads/DIV2K_valid_HR.zip.part").read_bytes() == loopback_server.files[
        "DIV2K_valid_HR.zip"
    ]


def test_404_is_one_line_naming_the_file(served, loopback_server, capsys):
    del loopback_server.files["DIV2K_valid_LR_bicubic_X3.zip"]
    with pytest.raises(DownloadError, match=r"DIV2K_valid_LR_bicubic_X3\.zip: the server answered HTTP 404"):
        fetch.fetch(["div2k-valid"], log=lambda m: None)
    assert main(["data", "fetch", "div2k-valid"]) == 1
    assert "HTTP 404 Not Found; check that the mirror serves the catalog's" in capsys.readouterr().err
    # what came before the failure is complete and recorded; what failed left no folder
    assert (served / "DIV2K/DIV2K_valid_LR_bicubic/X2").is_dir()
    assert not (served / "DIV2K/DIV2K_valid_LR_bicubic/X3").exists()


def test_zip_slip_is_refused_before_anything_is_written(served, loopback_server, monkeypatch, tmp_path):
    evil = _zip({"DIV2K_valid_HR/0801.png": _png(0), "../../escaped.png": _png(1)})
    _pin(monkeypatch, loopback_server, "DIV2K_valid_HR.zip", evil, 1)
    with pytest.raises(UnsafeArchiveError, match=r"member '\.\./\.\./escaped\.png' would be written outside"):
        fetch.fetch(["div2k-valid"], log=lambda m: None)
    assert not list(tmp_path.rglob("escaped.png"))
    assert not (served / "DIV2K").exists()


@pytest.mark.parametrize("member", ["/abs/escaped.png", "C:/escaped.png", "benchmark/Set5/../../../x.png"])
def test_tar_with_unsafe_names_or_links_is_refused(served, loopback_server, monkeypatch, member):
    files = {f"benchmark/{s}/HR/a.png": _png(0) for s in ("Set5", "Set14", "B100", "Urban100")}
    _pin(monkeypatch, loopback_server, "benchmark.tar", _tar({**files, member: _png(1)}), 4)
    with pytest.raises(UnsafeArchiveError, match="refused, nothing was extracted"):
        fetch.fetch(["benchmarks"], log=lambda m: None)
    (served / MARKER_DIR / "downloads/benchmark.tar").unlink()  # the refused archive is kept; make room
    link = ("benchmark/Set5/HR/b.png", "/etc/passwd")
    _pin(monkeypatch, loopback_server, "benchmark.tar", _tar(files, symlink=link), 4)
    with pytest.raises(UnsafeArchiveError):
        fetch.fetch(["benchmarks"], log=lambda m: None)
    assert not (served / "benchmark").exists()


def test_benchmark_tar_with_md5_only_lands_every_set(served, loopback_server, monkeypatch):
    files = {}
    for s in ("Set5", "Set14", "B100", "Urban100"):
        files[f"benchmark/{s}/HR/a.png"] = _png(0, 8)
        for x in (2, 4):
            files[f"benchmark/{s}/LR_bicubic/X{x}/ax{x}.png"] = _png(1, 4)
    data = _tar(files)
    loopback_server.files["benchmark.tar"] = data
    real = catalog.ARCHIVES["benchmark.tar"]
    monkeypatch.setitem(catalog.ARCHIVES, "benchmark.tar",
                        dataclasses.replace(real, md5=hashlib.md5(data).hexdigest(), images=12))  # fmt: skip
    (r,) = fetch.fetch(["set5", "urban100"], log=lambda m: None)  # one archive holds both: fetched once
    assert r.status == "fetched" and r.images == 12
    assert [p.name for p in catalog.benchmark_sets()] == ["Set5", "Set14", "B100", "Urban100"]
    (pair,) = open_dataset("set5", 4)
    assert pair.lr_path is not None and pair.lr_path.name == "ax4.png"
    marker = json.loads((served / MARKER_DIR / "benchmark.tar.json").read_text())
    assert marker["pinned"].startswith("md5 matches")


def test_image_count_mismatch_moves_nothing(served, loopback_server, monkeypatch):
    data = _zip({f"DIV2K_valid_HR/{i}.png": _png(i) for i in range(2)})
    _pin(monkeypatch, loopback_server, "DIV2K_valid_HR.zip", data, 3)
    with pytest.raises(fetch.DatasetError, match=r"2 images after extraction, expected 3; nothing was moved"):
        fetch.fetch(["div2k-valid"], log=lambda m: None)
    assert not (served / "DIV2K").exists()
    assert (served / MARKER_DIR / "downloads/DIV2K_valid_HR.zip").is_file()  # kept for inspection


def test_interrupted_extraction_leaves_no_half_layout(served, loopback_server, monkeypatch):
    real_extract = fetch._extract

    def extract_then_die(archive: Path, dest: Path) -> None:
        real_extract(archive, dest)
        raise KeyboardInterrupt  # Ctrl-C after the bytes are unpacked, before anything moved

    monkeypatch.setattr(fetch, "_extract", extract_then_die)
    with pytest.raises(KeyboardInterrupt):
        fetch.fetch(["div2k-valid"], log=lambda m: None)
    assert not (served / "DIV2K").exists()
    requests = len(loopback_server.requests)
    monkeypatch.setattr(fetch, "_extract", real_extract)
    fetch.fetch(["div2k-valid"], log=lambda m: None)
    assert len(loopback_server.requests) == requests + 3  # the first archive was not downloaded again
    assert len(list((served / "DIV2K/DIV2K_valid_HR").iterdir())) == 3
    assert not [p for p in (served / MARKER_DIR).iterdir() if p.name.startswith("staging-")]


def test_run_killed_between_renames_is_finished_not_refused(served, loopback_server, monkeypatch):
    files = {f"benchmark/{s}/HR/a.png": _png(0) for s in ("Set5", "Set14", "B100", "Urban100")}
    _pin(monkeypatch, loopback_server, "benchmark.tar", _tar(files), 4)
    real_rename = _die_on_second_move(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        fetch.fetch(["benchmarks"], log=lambda m: None)
    monkeypatch.setattr(fetch.os, "rename", real_rename)
    assert (served / "benchmark/Set5").is_dir() and not (served / "benchmark/Set14").exists()
    (r,) = fetch.fetch(["benchmarks"], log=lambda m: None)
    assert r.status == "fetched"
    assert all((served / f"benchmark/{s}/HR/a.png").is_file() for s in ("Set5", "Set14", "B100", "Urban100"))


def test_the_users_own_folder_is_never_replaced(served, loopback_server):
    own = served / "DIV2K/DIV2K_valid_HR"
    own.mkdir(parents=True)
    (own / "mine.png").write_bytes(b"user data")
    with pytest.raises(fetch.DatasetError, match=r"DIV2K_valid_HR: exists and was not put there by edgesr"):
        fetch.fetch(["div2k-valid"], log=lambda m: None)
    assert [p.name for p in own.iterdir()] == ["mine.png"]
    assert loopback_server.requests == []


def test_data_ls_shows_what_is_on_disk(served, capsys):
    fetch.fetch(["div2k-valid"], log=lambda m: None)
    assert main(["data", "ls"]) == 0
    out = "".join(capsys.readouterr())
    row = next(line for line in out.splitlines() if "div2k-valid" in line)
    assert "fetched 20" in row and "sha256" in row
    assert "request from authors" in next(line for line in out.splitlines() if "manga109" in line)


def test_missing_named_set_says_how_to_fetch_it(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESR_DATA", str(tmp_path))
    with pytest.raises(fetch.DatasetError, match=r"Set14 does not exist; run: edgesr data fetch set14"):
        open_dataset("set14", 4)
    with pytest.raises(fetch.DatasetError, match="request it at http://www.manga109.org"):
        open_dataset("manga109", 4)


def test_unknown_name_suggests_the_closest(capsys):
    assert main(["data", "fetch", "div2kk"]) == 1
    assert "div2kk: not a data set edgesr knows; did you mean div2k?" in capsys.readouterr().err


def test_existing_archive_with_wrong_bytes_is_reported_not_replaced(served, loopback_server):
    downloads = served / MARKER_DIR / "downloads"
    downloads.mkdir(parents=True)
    (downloads / "DIV2K_valid_HR.zip").write_bytes(b"something else")
    with pytest.raises(ChecksumError, match="left as it is"):
        fetch.fetch(["div2k-valid"], log=lambda m: None)
    assert (downloads / "DIV2K_valid_HR.zip").read_bytes() == b"something else"


def test_every_catalog_entry_is_complete():
    for name, a in catalog.ARCHIVES.items():
        assert a.file == name and a.url.startswith("https://") and a.url.endswith(name)
        assert a.moves and a.images > 0 and a.source
        if a.sha256 is not None:
            assert re.fullmatch(r"[0-9a-f]{64}", a.sha256) and a.size and a.size > 0, name
            assert "tensorflow_datasets" in a.source
        else:  # no sha256 published: the md5 that is, and the source says so
            assert a.md5 and re.fullmatch(r"[0-9a-f]{32}", a.md5) and "md5 only" in a.source, name
        for src, dst in a.moves:
            assert not Path(src).is_absolute() and ".." not in Path(dst).parts
    for d in catalog.DATASETS.values():
        assert all(f in catalog.ARCHIVES for f in d.archives), d.name
        assert d.archives or d.manual, d.name
        assert d.licence and d.description


def test_ctrl_c_during_a_download_says_how_to_continue(served, loopback_server, monkeypatch, capsys):
    import edgesr.download as dl

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dl, "_fetch_into", interrupted)
    assert main(["data", "fetch", "div2k-valid"]) == 130
    err = capsys.readouterr().err
    assert "what was downloaded is kept" in err and "run `edgesr data fetch div2k-valid` again" in err
    assert not (served / "DIV2K").exists()


def test_a_full_disk_while_extracting_leaves_no_staging(served, loopback_server, monkeypatch):
    import errno

    def full(archive: Path, dest: Path) -> None:
        (dest / "DIV2K_valid_HR").mkdir()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fetch, "_extract", full)
    with pytest.raises(fetch.DatasetError, match=r"DIV2K_valid_HR\.zip: cannot extract into .*: no space"):
        fetch.fetch(["div2k-valid"], log=lambda m: None)
    assert not [p for p in (served / MARKER_DIR).iterdir() if p.name.startswith("staging-")]
    assert not (served / "DIV2K").exists()


def test_a_rerun_under_another_spelling_of_the_root_finishes_what_it_started(
    served, loopback_server, monkeypatch, tmp_path
):
    files = {f"benchmark/{s}/HR/a.png": _png(0) for s in ("Set5", "Set14", "B100", "Urban100")}
    _pin(monkeypatch, loopback_server, "benchmark.tar", _tar(files), 4)
    monkeypatch.chdir(tmp_path)
    real_rename = _die_on_second_move(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        fetch.fetch(["benchmarks"], "data", log=lambda m: None)  # a relative root
    monkeypatch.setattr(fetch.os, "rename", real_rename)
    (r,) = fetch.fetch(["benchmarks"], tmp_path / "data", log=lambda m: None)  # the same, absolute
    assert r.status == "fetched"


def test_a_mirror_without_a_scheme_is_one_line(served, capsys):
    assert main(["data", "fetch", "set5", "--mirror", "example.org/sr"]) == 1
    err = capsys.readouterr().err
    assert "EDGESR_DATA_MIRROR (mirror of benchmark.tar) 'example.org/sr/benchmark.tar': expected" in err
    assert "Traceback" not in err


def test_a_catalog_name_means_the_catalog_set_beside_a_folder_of_that_name(served, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "set5").mkdir()  # an unrelated folder in the working directory
    (tmp_path / "set5" / "mine.png").write_bytes(_png(3))
    with pytest.raises(fetch.DatasetError, match="run: edgesr data fetch set5"):
        open_dataset("set5", 4)  # the catalog set, not ./set5
    assert [p.name for p in open_dataset("./set5", 4)] == ["mine"]
