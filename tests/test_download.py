"""edgesr.download against a loopback server: resume, servers without Range, retries, 4xx, checksums."""

from __future__ import annotations

import hashlib
import os

import pytest

from edgesr.download import ChecksumError, DownloadError, download, part_path

DATA = os.urandom(300_000)
SHA = hashlib.sha256(DATA).hexdigest()


def test_fetches_verifies_and_reports_progress(loopback_server, tmp_path):
    loopback_server.files["a.zip"] = DATA
    seen: list[tuple[int, int | None]] = []
    got = download(loopback_server.url("a.zip"), tmp_path / "a.zip", size=len(DATA), sha256=SHA,
                   progress=lambda done, total: seen.append((done, total)))  # fmt: skip
    assert (tmp_path / "a.zip").read_bytes() == DATA
    assert got.fetched and got.sha256 == SHA and got.resumed_from == 0
    assert not part_path(tmp_path / "a.zip").exists()
    assert seen[-1] == (len(DATA), len(DATA))


def test_cut_download_resumes_with_range(loopback_server, tmp_path):
    loopback_server.files["a.zip"] = DATA
    loopback_server.drop_after["a.zip"] = 100_000  # the server closes the connection mid-way
    got = download(loopback_server.url("a.zip"), tmp_path / "a.zip", size=len(DATA), sha256=SHA, backoff_s=0)
    assert (tmp_path / "a.zip").read_bytes() == DATA
    assert loopback_server.requests == [("a.zip", None), ("a.zip", "bytes=100000-")]
    assert got.resumed_from == 0


def test_partial_file_from_an_earlier_run_is_continued(loopback_server, tmp_path):
    loopback_server.files["a.zip"] = DATA
    part_path(tmp_path / "a.zip").write_bytes(DATA[:123_456])
    got = download(loopback_server.url("a.zip"), tmp_path / "a.zip", size=len(DATA), sha256=SHA)
    assert got.resumed_from == 123_456
    assert loopback_server.requests == [("a.zip", "bytes=123456-")]
    assert (tmp_path / "a.zip").read_bytes() == DATA


def test_server_without_range_support_restarts_from_zero(loopback_server, tmp_path):
    loopback_server.files["a.zip"] = DATA
    loopback_server.ranges = False
    part_path(tmp_path / "a.zip").write_bytes(b"x" * 5000)  # stale bytes must not survive
    download(loopback_server.url("a.zip"), tmp_path / "a.zip", size=len(DATA), sha256=SHA)
    assert (tmp_path / "a.zip").read_bytes() == DATA
    assert loopback_server.requests == [("a.zip", "bytes=5000-")]  # asked to resume, answered 200


def test_without_range_a_server_that_always_drops_gives_up(loopback_server, tmp_path):
    loopback_server.files["a.zip"] = DATA
    loopback_server.ranges = False

    class AlwaysDrop(dict):  # every answer is cut at 1000 bytes
        def __contains__(self, key: object) -> bool:
            return True

        def pop(self, key, default=None):  # type: ignore[override]
            return 1000

    loopback_server.drop_after = AlwaysDrop()
    with pytest.raises(DownloadError, match=r"a\.zip: the connection closed early \(2 retries\)"):
        download(loopback_server.url("a.zip"), tmp_path / "a.zip", size=len(DATA), retries=2, backoff_s=0)
    assert not (tmp_path / "a.zip").exists()


def test_checksum_mismatch_keeps_the_download_and_names_both_hashes(loopback_server, tmp_path):
    loopback_server.files["a.zip"] = DATA
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as e:
        download(loopback_server.url("a.zip"), tmp_path / "a.zip", size=len(DATA), sha256=wrong)
    assert f"expected {wrong}, got {SHA}" in str(e.value) and "a.zip" in str(e.value)
    assert not (tmp_path / "a.zip").exists()
    assert part_path(tmp_path / "a.zip").read_bytes() == DATA  # kept for inspection


def test_md5_is_checked_where_only_md5_is_published(loopback_server, tmp_path):
    loopback_server.files["a.tar"] = DATA
    md5 = hashlib.md5(DATA).hexdigest()
    with pytest.raises(ChecksumError, match=r"a\.tar: md5 mismatch: expected f+, got " + md5):
        download(loopback_server.url("a.tar"), tmp_path / "a.tar", md5="f" * 32)
    got = download(loopback_server.url("a.tar"), tmp_path / "b.tar", md5=md5)
    assert got.sha256 == SHA


def test_existing_file_is_verified_not_overwritten(loopback_server, tmp_path):
    (tmp_path / "a.zip").write_bytes(b"the user's own file")
    with pytest.raises(ChecksumError, match="left as it is"):
        download(loopback_server.url("a.zip"), tmp_path / "a.zip", sha256=SHA)
    assert (tmp_path / "a.zip").read_bytes() == b"the user's own file"
    assert loopback_server.requests == []


def test_404_is_final_and_names_the_url(loopback_server, tmp_path):
    with pytest.raises(DownloadError, match=r"missing\.zip: the server answered HTTP 404 Not Found; try X$"):
        download(loopback_server.url("missing.zip"), tmp_path / "m.zip", backoff_s=0, hint="try X")
    assert len(loopback_server.requests) == 1  # no retries on a 4xx


def test_5xx_is_retried(loopback_server, tmp_path):
    loopback_server.files["a.zip"] = DATA
    loopback_server.status["a.zip"] = [503, 502]  # the service comes back at the third try
    download(loopback_server.url("a.zip"), tmp_path / "a.zip", sha256=SHA, backoff_s=0)
    assert (tmp_path / "a.zip").read_bytes() == DATA and len(loopback_server.requests) == 3


def test_unreachable_server_gives_up_after_the_retries(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(DownloadError, match=r"cannot connect .*\(1 retries\)$"):  # no part: nothing kept
        download(f"http://127.0.0.1:{port}/a.zip", tmp_path / "a.zip", retries=1, backoff_s=0)


def test_progress_lines_print_every_tenth_not_every_chunk():
    from edgesr.download import ProgressLines

    lines: list[str] = []
    show = ProgressLines("a.zip", lines.append)
    for done in range(0, 1001, 7):  # 143 chunks
        show(done, 1000)
    show(1000, 1000)
    assert len(lines) == 11 and lines[0].startswith("downloading a.zip: 0.0 / 0.0 MB")
    unknown: list[str] = []
    show = ProgressLines("b.tar", unknown.append)
    for mb in range(0, 201, 5):
        show(mb << 20, None)
    assert len(unknown) == 5  # 0, 50, 100, 150, 200 MB


def test_no_content_length_and_an_early_close_is_resumed(loopback_server, tmp_path):
    loopback_server.files["a.zip"] = DATA
    loopback_server.no_length.add("a.zip")
    loopback_server.drop_after["a.zip"] = 70_000  # looks like a normal end of the body
    download(loopback_server.url("a.zip"), tmp_path / "a.zip", size=len(DATA), sha256=SHA)
    assert (tmp_path / "a.zip").read_bytes() == DATA
    assert loopback_server.requests == [("a.zip", None), ("a.zip", "bytes=70000-")]


def test_a_206_that_starts_at_zero_is_not_appended(loopback_server, tmp_path):
    loopback_server.files["a.zip"] = DATA
    loopback_server.from_zero.add("a.zip")
    part_path(tmp_path / "a.zip").write_bytes(DATA[:1000])
    download(loopback_server.url("a.zip"), tmp_path / "a.zip", size=len(DATA), sha256=SHA)
    assert (tmp_path / "a.zip").read_bytes() == DATA


def test_a_206_for_a_file_of_another_size_is_refused(loopback_server, tmp_path):
    loopback_server.files["a.zip"] = DATA + b"more"
    part_path(tmp_path / "a.zip").write_bytes(DATA[:1000])
    n = len(DATA)
    with pytest.raises(ChecksumError, match=rf"the server's file is {n + 4} bytes, expected {n}"):
        download(loopback_server.url("a.zip"), tmp_path / "a.zip", size=len(DATA))


def test_416_on_a_complete_part_without_a_pinned_size(loopback_server, tmp_path):
    loopback_server.files["a.zip"] = DATA
    part_path(tmp_path / "a.zip").write_bytes(DATA)
    got = download(loopback_server.url("a.zip"), tmp_path / "a.zip")
    assert got.sha256 == SHA and loopback_server.requests == [("a.zip", f"bytes={len(DATA)}-")]


def test_not_enough_disk_for_the_answer_is_said_before_writing(loopback_server, tmp_path, monkeypatch):
    import collections

    import edgesr.download as dl

    loopback_server.files["a.zip"] = DATA
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(DownloadError, match=r"0\.00 GB free, the download needs 0\.00 GB more; free space"):
        download(loopback_server.url("a.zip"), tmp_path / "a.zip", size=len(DATA))
    assert not (tmp_path / "a.zip").exists()


def test_a_full_disk_while_writing_is_not_called_a_network_error(loopback_server, tmp_path, monkeypatch):
    import builtins
    import errno

    import edgesr.download as dl

    loopback_server.files["a.zip"] = DATA
    real_open = builtins.open

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

        def seek(self, n):
            self.f.seek(n)

        def truncate(self):
            self.f.truncate()

        def write(self, b):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dl, "open", lambda path, mode: Full(real_open(path, mode)), raising=False)
    with pytest.raises(DownloadError, match=r"a\.zip\.part: no space left"):
        download(loopback_server.url("a.zip"), tmp_path / "a.zip", size=len(DATA))


@pytest.mark.parametrize("url", ["example.org/a.zip", "ftp://example.org/a.zip", "http:///a.zip"])
def test_a_url_without_http_is_one_line_not_a_traceback(url, tmp_path):
    with pytest.raises(DownloadError, match=r"expected http\(s\)://HOST/PATH"):
        download(url, tmp_path / "a.zip")
