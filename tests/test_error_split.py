"""benchmarks error-split: the error decomposition on known answers, and the command end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.__main__ import main
from benchmarks.error_split import laplacian_energy, split_error
from edgesr.data import write_image
from edgesr.errors import UsageError
from edgesr.models import build_model
from edgesr.train.checkpoint import CheckpointMeta, save_checkpoint


def _photo(seed: int, h: int = 40, w: int = 48) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(40, 200, size=(h, w))


def test_a_constant_offset_is_all_bias_and_coarse_error():
    hr = _photo(0)
    s = split_error(hr + 2.0, hr, block=8)
    assert s.bias == pytest.approx(2.0)
    assert s.coarse == pytest.approx(4.0)
    assert s.fine == pytest.approx(0.0, abs=1e-12)
    assert s.psnr == pytest.approx(10 * math.log10(255.0**2 / 4.0))
    assert s.detail == pytest.approx(1.0)  # an offset adds no detail


def test_a_checkerboard_is_all_fine_error_and_raises_detail():
    hr = _photo(1)
    checker = np.indices(hr.shape).sum(axis=0) % 2 * 2.0 - 1.0  # +-1, zero mean in every 8x8 block
    s = split_error(hr + checker, hr, block=8)
    assert s.bias == pytest.approx(0.0, abs=1e-12)
    assert s.coarse == pytest.approx(0.0, abs=1e-12)
    assert s.fine == pytest.approx(1.0)
    assert s.detail > 1.0


def test_coarse_plus_fine_is_the_mse_and_smoothing_lowers_detail():
    hr = _photo(2)
    rng = np.random.default_rng(3)
    sr = hr + rng.normal(0.5, 3.0, size=hr.shape)
    s = split_error(sr, hr, block=8)
    assert s.coarse + s.fine == pytest.approx(np.mean((sr - hr) ** 2))
    assert s.coarse > 0 and s.fine > s.coarse  # white noise is mostly fine-scale
    flat = np.full_like(hr, hr.mean())
    assert split_error(flat, hr).detail == pytest.approx(0.0, abs=1e-12)
    assert laplacian_energy(hr) > 0


def test_the_split_stays_exact_when_the_sides_are_not_multiples_of_the_block():
    hr = _photo(4, 41, 50)
    rng = np.random.default_rng(5)
    sr = hr + rng.normal(0.3, 2.0, size=hr.shape)
    for block in (8, 41, 64):  # 41: one block high; 64: one block covering everything
        s = split_error(sr, hr, block=block)
        assert s.coarse + s.fine == pytest.approx(np.mean((sr - hr) ** 2))
    # one block covering the whole image: coarse is the squared bias
    assert split_error(sr, hr, block=64).coarse == pytest.approx(np.mean(sr - hr) ** 2)
    # an error that is constant within each 8 px tile, edge tiles included, is all coarse
    tiles = rng.normal(0, 1, size=(6, 7))
    offset = np.repeat(np.repeat(tiles, 8, axis=0), 8, axis=1)[:41, :50]
    s = split_error(hr + offset, hr, block=8)
    assert s.fine == pytest.approx(0.0, abs=1e-12) and s.coarse == pytest.approx(np.mean(offset**2))


def test_split_error_names_what_is_wrong():
    with pytest.raises(ValueError, match="equal 2-D"):
        split_error(np.zeros((8, 8)), np.zeros((8, 9)))
    with pytest.raises(ValueError, match="block 0"):
        split_error(np.zeros((8, 8)), np.zeros((8, 8)), block=0)


@pytest.fixture
def run_and_photos(tmp_path):
    net = build_model("edsr", scale=2, n_resblocks=1, n_feats=8)
    save_checkpoint(tmp_path / "tiny-s0", net, CheckpointMeta(net.arch, 2, (1.0,), None, "r", 1), None)
    photos = tmp_path / "val"
    photos.mkdir()
    for i, (name, contrast) in enumerate([("Flat", 0.1), ("Busy", 1.0)]):
        grey = np.clip(_photo(10 + i, 32, 36) * contrast, 0, 255).astype(np.uint8)
        write_image(photos / f"{name}.png", np.repeat(grey[..., None], 3, axis=2))
    return tmp_path / "tiny-s0", photos


def test_the_command_tabulates_bicubic_and_each_run_per_photo(run_and_photos, tmp_path, capsys):
    run, photos = run_and_photos
    out = tmp_path / "split.md"
    assert main(["error-split", str(run), "--data", str(photos), "--photos", "Flat", "--out", str(out)]) == 0
    lines = [ln for ln in out.read_text().splitlines() if ln.startswith("| Flat")]
    assert [ln.split(" | ")[1] for ln in lines] == ["bicubic", "tiny-s0"]
    assert out.read_text() == capsys.readouterr().out
    assert "Busy" not in out.read_text()


def test_bad_input_is_one_clear_error(run_and_photos, tmp_path, capsys):
    run, photos = run_and_photos
    with pytest.raises(UsageError, match="no photo named Nope"):
        main(["error-split", str(run), "--data", str(photos), "--photos", "Flat", "Nope"])
    with pytest.raises(UsageError, match="both named tiny-s0"):
        main(["error-split", str(run), str(run), "--data", str(photos)])
    net = build_model("edsr", scale=3, n_resblocks=1, n_feats=8)
    save_checkpoint(tmp_path / "x3", net, CheckpointMeta(net.arch, 3, (1.0,), None, "r", 1), None)
    with pytest.raises(UsageError, match=r"different scales \[2, 3\]"):
        main(["error-split", str(run), str(tmp_path / "x3"), "--data", str(photos)])
    with pytest.raises(SystemExit):  # argparse: one line naming --block, no traceback
        main(["error-split", str(run), "--data", str(photos), "--block", "0"])
    assert "--block: must be a whole number of pixels >= 1, got 0" in capsys.readouterr().err
