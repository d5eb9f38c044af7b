"""Shared fixtures: small real-photo data sets made on the fly (no downloads), tiny recipes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _photo() -> np.ndarray:
    import skimage.data

    return np.asarray(
        Image.open(Path(os.path.dirname(skimage.data.__file__)) / "astronaut.png").convert("RGB")
    )


@pytest.fixture(scope="session")
def tiny_photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two folders of 48x48 real-photo crops: `train` (4 images) and `val` (2 images)."""
    root = tmp_path_factory.mktemp("photos")
    img = _photo()
    crops = [(0, 0), (100, 200), (300, 120), (200, 300), (400, 400), (250, 50)]
    for i, (y, x) in enumerate(crops):
        split = "train" if i < 4 else "val"
        (root / split).mkdir(exist_ok=True)
        Image.fromarray(img[y : y + 48, x : x + 48]).save(root / split / f"img{i}.png")
    return {"train": root / "train", "val": root / "val"}


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """LR caches go to a per-test folder, never to the user's ~/.cache."""
    monkeypatch.setenv("EDGESR_CACHE", str(tmp_path / "cache"))


@pytest.fixture(autouse=True)
def _isolated_user_profiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Measurements a test makes go to a per-test folder, never to the user's own profiles."""
    monkeypatch.setenv("EDGESR_PROFILES", str(tmp_path / "user-profiles"))


@pytest.fixture(autouse=True)
def _no_warmup_time_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Host timings in tests check behaviour, not latency: no 0.5 s warm-up floor per measurement
    (`time_fn`'s floor itself is tested in tests/profile/test_host_profile.py)."""
    monkeypatch.setattr("edgesr.profile.host.WARMUP_S", 0.0)


@pytest.fixture
def checkpoint_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every opening of a checkpoint file (header or weights) during the test, in order (clear() it to
    count from a point on)."""
    import edgesr.train.checkpoint as ckpt

    opened: list[str] = []
    real = ckpt.safe_open

    def counting(path, *args, **kwargs):
        opened.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(ckpt, "safe_open", counting)
    return opened


class LoopbackServer:
    """An HTTP server on 127.0.0.1 that serves `files` (name -> bytes) to the code under test.

    Knobs a test turns: `ranges = False` makes it ignore `Range` (answer 200 with the whole file);
    `drop_after[name] = n` makes the next answer for `name` close the connection after n bytes of
    the body (it then serves normally); `status[name] = [503, 503]` answers those statuses to the
    next requests for `name`, one each, then serves it. `no_length` names files answered without a
    Content-Length (the end is the connection closing); `from_zero` names files whose answer to a
    Range request is a 206 that starts at byte 0 anyway (a broken server or proxy).
    `requests` records (path, Range header or None) for every GET.
    """

    def __init__(self) -> None:
        import http.server
        import threading

        self.files: dict[str, bytes] = {}
        self.ranges = True
        self.drop_after: dict[str, int] = {}
        self.status: dict[str, list[int]] = {}
        self.no_length: set[str] = set()
        self.from_zero: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:  # noqa: N802  (http.server's name)
                name = self.path.lstrip("/")
                rng = self.headers.get("Range")
                server.requests.append((name, rng))
                if server.status.get(name):
                    self.send_error(server.status[name].pop(0))
                    return
                if name not in server.files:
                    self.send_error(404)
                    return
                data, start = server.files[name], 0
                if rng and server.ranges:
                    start = 0 if name in server.from_zero else int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                if name in server.no_length:
                    self.close_connection = True
                else:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if name in server.drop_after:
                    self.wfile.write(body[: server.drop_after.pop(name)])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        self.base = f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def loopback_server():
    """A `LoopbackServer` on 127.0.0.1 for code that downloads (nothing in tests reaches the internet)."""
    server = LoopbackServer()
    yield server
    server.close()
