"""`edgesr.data.prepare`: BasicSR-style sub-images, aligned LR crops, atomic and re-runnable output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgesr.data.bicubic import degrade, modcrop
from edgesr.data.datasets import TrainPatches, build_train_loader, open_dataset
from edgesr.data.images import read_image, write_image
from edgesr.data.pairs import DatasetError, find_pairs
from edgesr.data.prepare import MARKER, PrepareError, crop_positions, default_out, prepare
from edgesr.errors import UsageError


def _img(h: int, w: int, seed: int = 0) -> np.ndarray:
    # smooth plus noise: a photo-like image whose bicubic LR is not trivially flat
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 127 + 60 * np.sin(yy / 7.0)[..., None] * np.cos(xx[..., None] / 5.0 + np.arange(3))
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def _write(path: Path, h: int, w: int, seed: int = 0) -> np.ndarray:
    arr = _img(h, w, seed)
    write_image(path, arr)
    return arr


def _hr_names(folder: Path) -> list[str]:
    return sorted(p.name for p in (folder / "HR").iterdir())


# --------------------------------------------------------------------------- window positions
def test_crop_positions_follow_basicsr() -> None:
    # 0, step, ... while the window fits; a last window flush with the edge only when more than
    # `thresh` pixels would be left over.
    assert crop_positions(70, 32, 16, 4) == [0, 16, 32, 38]  # 6 px left over > 4
    assert crop_positions(100, 32, 16, 4) == [0, 16, 32, 48, 64]  # 4 px left over: not > 4
    assert crop_positions(100, 32, 16, 3) == [0, 16, 32, 48, 64, 68]
    assert crop_positions(32, 32, 16, 0) == [0]
    assert crop_positions(31, 32, 16, 0) == []
    # DIV2K's 2040 x 1356 with the defaults: 8 x 5 windows
    assert crop_positions(2040, 480, 240, 48) == [0, 240, 480, 720, 960, 1200, 1440, 1560]
    assert crop_positions(1356, 480, 240, 48) == [0, 240, 480, 720, 876]


def test_default_out_is_next_to_the_hr_folder(tmp_path: Path) -> None:
    assert default_out(tmp_path / "DIV2K" / "DIV2K_train_HR") == tmp_path / "DIV2K" / "DIV2K_train_HR_sub"
    assert default_out(tmp_path / "Set5" / "HR") == tmp_path / "Set5_sub"
    assert default_out(tmp_path / "photos") == tmp_path / "photos_sub"


# --------------------------------------------------------------------------- crops and alignment
def test_synthesised_lr_crops_are_the_degraded_image_cut_at_the_same_place(tmp_path: Path) -> None:
    src = tmp_path / "photos"
    hr = _write(src / "a.png", 71, 101)  # modcrop x2 -> 70 x 100
    progress: list[tuple[int, int]] = []
    rep = prepare(
        src, 2, crop=32, step=16, thresh=4, workers=1, progress=lambda d, t: progress.append((d, t))
    )
    assert progress == [(0, 1), (1, 1)]
    assert rep.out == tmp_path / "photos_sub" and not rep.already_done
    assert (rep.images, rep.crops, rep.shipped_lr, rep.skipped) == (1, 20, 0, ())
    assert _hr_names(rep.out) == [f"a_s{i:03d}.png" for i in range(1, 21)]
    full_hr, full_lr = modcrop(hr, 2), degrade(hr, 2)
    ys, xs = [0, 16, 32, 38], [0, 16, 32, 48, 64]
    for k, (y, x) in enumerate([(y, x) for y in ys for x in xs], 1):  # row-major numbering
        hr_crop = read_image(rep.hr_dir / f"a_s{k:03d}.png")
        lr_crop = read_image(rep.lr_dir / f"a_s{k:03d}x2.png")
        np.testing.assert_array_equal(hr_crop, full_hr[y : y + 32, x : x + 32])
        np.testing.assert_array_equal(lr_crop, full_lr[y // 2 : y // 2 + 16, x // 2 : x // 2 + 16])
        # The LR that training on the whole image sees (load_lr): the degrade of the whole image. Away
        # from the crop's border it is the degrade of the HR crop itself; at the border that one
        # would mirror the crop instead of seeing its neighbours.
        np.testing.assert_array_equal(lr_crop[3:-3, 3:-3], degrade(hr_crop, 2)[3:-3, 3:-3])
    assert sorted(src.iterdir()) == [src / "a.png"]  # the source is only read


def test_shipped_lr_is_cut_not_recomputed(tmp_path: Path) -> None:
    root = tmp_path / "DIV2K"
    hr = _write(root / "DIV2K_train_HR" / "0001.png", 64, 96)
    shipped = _img(16, 24, seed=3)  # deliberately not the degrade: it must be what is cut
    write_image(root / "DIV2K_train_LR_bicubic" / "X4" / "0001x4.png", shipped)
    _write(root / "DIV2K_valid_HR" / "0801.png", 64, 64)  # a DIV2K root: the train split is used
    rep = prepare(root, 4, crop=32, step=32, thresh=0, workers=1)
    assert rep.out == root / "DIV2K_train_HR_sub"
    assert (rep.images, rep.crops, rep.shipped_lr) == (1, 6, 1)
    np.testing.assert_array_equal(read_image(rep.hr_dir / "0001_s006.png"), hr[32:64, 64:96])
    np.testing.assert_array_equal(read_image(rep.lr_dir / "0001_s006x4.png"), shipped[8:16, 16:24])
    # the DIV2K folder still reads as before: the _sub folder is not a split
    assert [p.name for p in find_pairs(root, 4, split_hint="train")] == ["0001"]


def test_output_is_a_training_set_find_pairs_and_trainpatches_read(tmp_path: Path) -> None:
    src = tmp_path / "photos"
    for i, (h, w) in enumerate([(40, 40), (48, 72), (20, 64)]):  # the last is smaller than the crop
        _write(src / f"img{i}.png", h, w, seed=i)
    rep = prepare(src, 2, crop=24, step=12, thresh=4, workers=2)  # through the process pool
    assert rep.skipped == ("img2",) and rep.images == 2
    assert rep.crops == 2 * 2 + 3 * 5 and len(_hr_names(rep.out)) == rep.crops
    pairs = open_dataset(str(rep.out), 2)
    assert len(pairs) == rep.crops and all(p.lr_path is not None for p in pairs)
    assert pairs[0].name == "img0_s001" and pairs[0].lr_path == rep.lr_dir / "img0_s001x2.png"
    data = TrainPatches(pairs, 2, 8, length=8, seed=0, cache_dir=tmp_path / "cache", preload=False)
    batch = next(iter(build_train_loader(data, 4, workers=0)))
    assert batch["lr"].shape == (4, 3, 8, 8) and batch["hr"].shape == (4, 3, 16, 16)
    assert not (tmp_path / "cache").exists()  # the LR crops are shipped: nothing synthesised
    marker = json.loads((rep.out / MARKER).read_text())
    assert (marker["scale"], marker["crop"], marker["step"], marker["thresh"]) == (2, 24, 12, 4)
    assert marker["crops"] == rep.crops and marker["source"]["hr_dir"] == str(src.resolve())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos", "photos_sub"]  # no staging left


# --------------------------------------------------------------------------- re-runs and errors
def test_rerun_is_a_no_op_and_other_settings_are_refused(tmp_path: Path) -> None:
    src = tmp_path / "photos"
    _write(src / "a.png", 40, 40)
    first = prepare(src, 2, crop=24, step=12, workers=1)
    stamp = (first.hr_dir / "a_s001.png").stat().st_mtime_ns
    again = prepare(src, 2, crop=24, step=12, workers=1)
    assert again.already_done and (again.crops, again.images) == (first.crops, first.images)
    assert (first.hr_dir / "a_s001.png").stat().st_mtime_ns == stamp
    with pytest.raises(PrepareError, match=r"other settings \(step: 12 -> 8\).*delete .*--out") as info:
        prepare(src, 2, crop=24, step=8, workers=1)
    assert str(first.out) in str(info.value)
    with pytest.raises(PrepareError, match=r"scale: 2 -> 4"):
        prepare(src, 4, crop=24, step=12, workers=1)
    other = prepare(src, 2, crop=24, step=8, workers=1, out=tmp_path / "step8")
    assert other.out == tmp_path / "step8" and other.crops == 9
    _write(src / "b.png", 40, 40, seed=1)  # a new source image: the old output is stale
    with pytest.raises(PrepareError, match="source images changed"):
        prepare(src, 2, crop=24, step=12, workers=1)
    (tmp_path / "mine").mkdir()
    with pytest.raises(PrepareError, match="not an `edgesr data prepare` output"):
        prepare(src, 2, crop=24, step=12, workers=1, out=tmp_path / "mine")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"crop": 30}, r"crop=30 is not a multiple of the scale x4.*7\.5.*crop=32"),
        ({"crop": 32, "step": 18}, r"step=18 is not a multiple of the scale x4.*step=16"),
        ({"crop": 0}, r"crop=0: must be >= 1"),
        ({"thresh": -1}, r"thresh=-1"),
        ({"workers": 0}, r"workers=0"),
    ],
)
def test_bad_settings_are_refused_before_any_work(
    tmp_path: Path, kwargs: dict[str, int], message: str
) -> None:
    _write(tmp_path / "photos" / "a.png", 40, 40)
    with pytest.raises(UsageError, match=message):
        prepare(tmp_path / "photos", 4, **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]


@pytest.mark.parametrize("workers", [1, 2])
def test_an_unreadable_image_leaves_no_output(tmp_path: Path, workers: int) -> None:
    src = tmp_path / "photos"
    for i in range(4):
        _write(src / f"img{i}.png", 40, 40, seed=i)
    (src / "img2.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(DatasetError, match=r"img2\.png: not a recognised image"):
        prepare(src, 2, crop=24, step=12, workers=workers)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]  # no output, no staging folder


def test_a_wrong_size_shipped_lr_is_named(tmp_path: Path) -> None:
    root = tmp_path / "Set5"
    _write(root / "HR" / "baby.png", 40, 40)
    write_image(root / "LR_bicubic" / "X2" / "babyx2.png", _img(10, 10))  # the x4 LR in the x2 folder
    with pytest.raises(PrepareError, match=r"babyx2\.png: LR is 10x10.*wrong scale folder"):
        prepare(root, 2, crop=24, step=12, workers=1)
    assert not (tmp_path / "Set5_sub").exists()


def test_all_images_smaller_than_the_crop(tmp_path: Path) -> None:
    _write(tmp_path / "photos" / "a.png", 20, 20)
    with pytest.raises(PrepareError, match="smaller than the 24x24 crop"):
        prepare(tmp_path / "photos", 2, crop=24, step=12, workers=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]


def test_patches_from_sub_images_match_the_whole_image_at_the_same_place(tmp_path: Path) -> None:
    # A patch drawn from a sub-image is pixel for pixel the patch at that place of the 2K image.
    src = tmp_path / "photos"
    _write(src / "a.png", 48, 48)
    rep = prepare(src, 2, crop=24, step=12, workers=1)
    whole = TrainPatches(find_pairs(src, 2), 2, 24, length=1, seed=0, augment=False, preload=False)
    lr_whole, hr_whole = whole._load(0)
    sub = TrainPatches(find_pairs(rep.out, 2), 2, 12, length=1, seed=0, augment=False, preload=False)
    k = [p.name for p in sub.pairs].index("a_s005")  # window (12, 12)
    lr_sub, hr_sub = sub._load(k)
    np.testing.assert_array_equal(lr_sub, lr_whole[6:18, 6:18])
    np.testing.assert_array_equal(hr_sub, hr_whole[12:36, 12:36])


# --------------------------------------------------------------------------- the command line
def test_cli_prepares_a_catalog_name_and_reruns_as_a_no_op(tmp_path: Path, monkeypatch, capsys) -> None:
    from edgesr.cli import main

    root = tmp_path / "data"
    for i in range(2):
        _write(root / "DIV2K/DIV2K_train_HR" / f"{i + 1:04d}.png", 40, 56, seed=i)
    monkeypatch.setenv("EDGESR_DATA", str(root))
    argv = ["data", "prepare", "div2k", "--scale", "2", "--crop", "24", "--step", "12", "--thresh", "4",
            "--workers", "1"]  # fmt: skip
    assert main(argv) == 0
    out = "".join(capsys.readouterr())
    sub = root / "DIV2K/DIV2K_train_HR_sub"
    assert f"train on it with: data.train={sub.resolve()}" in out and len(_hr_names(sub)) == 2 * 2 * 4
    assert main(argv) == 0
    assert "already prepared with these settings, nothing to do" in "".join(capsys.readouterr())
    other = [a if a not in ("24", "12") else {"24": "32", "12": "16"}[a] for a in argv]  # crop 32, step 16
    assert main(other) == 1
    assert "error:" in capsys.readouterr().err and sub.is_dir()


def test_cli_prepares_the_split_a_catalog_name_names(tmp_path: Path, monkeypatch, capsys) -> None:
    from edgesr.cli import main

    root = tmp_path / "data"
    _write(root / "DIV2K/DIV2K_train_HR/0001.png", 40, 56, seed=0)
    _write(root / "DIV2K/DIV2K_valid_HR/0801.png", 40, 56, seed=1)
    monkeypatch.setenv("EDGESR_DATA", str(root))
    argv = ["data", "prepare", "div2k-valid", "--scale", "2", "--crop", "24", "--step", "12",
            "--workers", "1"]  # fmt: skip
    assert main(argv) == 0
    names = _hr_names(root / "DIV2K/DIV2K_valid_HR_sub")
    assert names and all(n.startswith("0801_") for n in names)
    assert not (root / "DIV2K/DIV2K_train_HR_sub").exists()
