"""edgesr.files: the one atomic-write mechanism (files and folders, mode kept, nothing left behind)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edgesr.files import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text


def test_text_is_written_as_given_and_keeps_the_replaced_files_mode(tmp_path: Path) -> None:
    f = tmp_path / "sub" / "r.yaml"
    atomic_write_text(f, "a: 1\r\nb: é\r\n")  # parent folders are made; CRLF is not translated
    assert f.read_bytes() == "a: 1\r\nb: é\r\n".encode()
    f.chmod(0o640)
    atomic_write_bytes(f, b"x")
    assert f.read_bytes() == b"x" and f.stat().st_mode & 0o777 == 0o640
    assert os.listdir(f.parent) == ["r.yaml"]


def test_a_new_file_gets_the_mode_open_gives(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "new.txt", "x")
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(umask)
    assert (tmp_path / "new.txt").stat().st_mode & 0o777 == (tmp_path / "plain.txt").stat().st_mode & 0o777


def test_a_failing_writer_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    f = tmp_path / "x.bin"
    f.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(f) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert f.read_bytes() == b"old" and os.listdir(tmp_path) == ["x.bin"]
    with pytest.raises(FileNotFoundError, match="created nothing"), atomic_path(f):
        pass
    assert f.read_bytes() == b"old" and os.listdir(tmp_path) == ["x.bin"]


def test_a_folder_replaces_a_folder(tmp_path: Path) -> None:
    out = tmp_path / "model.mlpackage"
    for content in ("one", "two"):
        with atomic_path(out) as tmp:
            tmp.mkdir()
            (tmp / content).write_text(content)
    assert os.listdir(out) == ["two"] and os.listdir(tmp_path) == ["model.mlpackage"]


def test_json_is_strict_and_ends_in_a_newline(tmp_path: Path) -> None:
    f = tmp_path / "m.json"
    atomic_write_json(f, {"a": [1, 2.5]})
    assert f.read_text() == json.dumps({"a": [1, 2.5]}, indent=2) + "\n"
    with pytest.raises(ValueError):
        atomic_write_json(f, {"a": float("nan")})
    assert json.loads(f.read_text()) == {"a": [1, 2.5]}
