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
