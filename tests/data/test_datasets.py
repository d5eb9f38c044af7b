"""Dataset discovery, the LR cache, eval/train datasets, resumable loaders and the built-in set."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from edgesr.data import datasets as ds
from edgesr.data.bicubic import degrade, modcrop
from edgesr.data.datasets import (
    EvalImages,
    TrainPatches,
    build_train_loader,
    load_lr,
    lr_cache_path,
    open_dataset,
)
from edgesr.data.images import read_image, write_image
from edgesr.data.pairs import DatasetError, ImagePair, default_cache_dir, find_pairs
from edgesr.data.samples import BUILTIN_TRAIN, BUILTIN_VAL, builtin_pairs


def _img(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _write(path: Path, h: int = 24, w: int = 20, seed: int = 0) -> np.ndarray:
    arr = _img(h, w, seed)
    write_image(path, arr)
    return arr


# ---------------------------------------------------------------- find_pairs
def test_div2k_layout(tmp_path: Path) -> None:
    root = tmp_path / "DIV2K"
    for n in ("0002", "0001"):
        _write(root / "DIV2K_train_HR" / f"{n}.png")
    _write(root / "DIV2K_train_LR_bicubic" / "X2" / "0001x2.png", 12, 10)
    pairs = find_pairs(root, 2)
    assert [p.name for p in pairs] == ["0001", "0002"]
    assert pairs[0].lr_path == (root / "DIV2K_train_LR_bicubic" / "X2" / "0001x2.png").resolve()
    assert pairs[1].lr_path is None  # not shipped: will be synthesised
    assert find_pairs(root, 4)[0].lr_path is None
    # Pointing at the HR folder itself finds the sibling LR folder.
    assert find_pairs(root / "DIV2K_train_HR", 2) == pairs
    # Two splits: refuse to guess, accept a hint.
    _write(root / "DIV2K_valid_HR" / "0801.png")
    with pytest.raises(DatasetError, match="several DIV2K splits"):
        find_pairs(root, 2)
    assert [p.name for p in find_pairs(root, 2, split_hint="val")] == ["0801"]
    assert find_pairs(root, 2, split_hint="train") == pairs


def test_benchmark_layout(tmp_path: Path) -> None:
    root = tmp_path / "Set5"
    _write(root / "HR" / "baby.png", 16, 16)
    _write(root / "HR" / "bird.png", 16, 16)
    _write(root / "LR_bicubic" / "X4" / "babyx4.png", 4, 4)
    pairs = find_pairs(root, 4)
    assert [(p.name, p.lr_path is not None) for p in pairs] == [("baby", True), ("bird", False)]
    assert find_pairs(root / "HR", 4) == pairs


def test_plain_folder_extensions_and_order(tmp_path: Path) -> None:
    for name in ("b.PNG", "a.jpg", "c.tiff", "d.bmp"):
        _write(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    pairs = find_pairs(tmp_path, 2)
    assert [p.hr_path.name for p in pairs] == ["a.jpg", "b.PNG", "c.tiff", "d.bmp"]
    assert all(p.lr_path is None for p in pairs)


def test_missing_or_empty_folder_names_it_and_the_layouts(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found") as info:
        find_pairs(tmp_path / "nope", 2)
    assert str(tmp_path / "nope") in str(info.value) and "DIV2K_train_HR" in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images found") as info:
        find_pairs(tmp_path / "empty", 2)
    assert "Set5/HR" in str(info.value)


# ---------------------------------------------------------------- LR cache
def test_lr_cache_is_made_once_and_invalidated_by_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hr_path = tmp_path / "data" / "x.png"
    hr = _write(hr_path, 26, 21)
    pair = ImagePair("x", hr_path)
    cache = tmp_path / "cache"
    lr = load_lr(pair, 2, cache)
    np.testing.assert_array_equal(lr, degrade(hr, 2))
    cached = lr_cache_path(hr_path, 2, cache)
    assert cached.is_file() and cached.parent.name == "X2" and cached.name == "x.png"
    assert cached.parent.parent.name.startswith("data-")

    def boom(*_: object) -> None:
        raise AssertionError("degrade must not run on a cache hit")

    monkeypatch.setattr(ds, "degrade", boom)
    np.testing.assert_array_equal(load_lr(pair, 2, cache), lr)
    monkeypatch.undo()

    new = _write(hr_path, 26, 21, seed=5)  # a changed image (new mtime) invalidates its LR
    os.utime(hr_path, ns=(1, 1))
    np.testing.assert_array_equal(load_lr(pair, 2, cache), degrade(new, 2))
    assert [p.name for p in cached.parent.iterdir()] == ["x.png"]  # no temp files left


def test_default_cache_dir_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGESR_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("EDGESR_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "edgesr"


# ---------------------------------------------------------------- EvalImages
def test_eval_images_items(tmp_path: Path) -> None:
    root = tmp_path / "Set5"
    hr = _write(root / "HR" / "a.png", 27, 22)
    shipped = _write(root / "LR_bicubic" / "X3" / "ax3.png", 9, 7, seed=9)
    _write(root / "HR" / "b.png", 30, 30)
    data = EvalImages(find_pairs(root, 3), 3, tmp_path / "cache")
    item = data[0]
    assert item["name"] == "a"
    assert item["hr"].shape == (3, 27, 21) and item["lr"].shape == (3, 9, 7)
    assert torch.equal(item["lr"], torch.from_numpy(shipped).permute(2, 0, 1).float() / 255)
    assert torch.equal(item["hr"], torch.from_numpy(modcrop(hr, 3)).permute(2, 0, 1).float() / 255)
    assert data[1]["lr"].shape == (3, 10, 10)


def test_eval_images_wrong_lr_size_names_both_files(tmp_path: Path) -> None:
    root = tmp_path / "Set5"
    _write(root / "HR" / "a.png", 24, 24)
    _write(root / "LR_bicubic" / "X4" / "ax4.png", 12, 12)  # really the x2 LR
    with pytest.raises(DatasetError) as info:
        EvalImages(find_pairs(root, 4), 4, tmp_path / "cache")
    assert "ax4.png" in str(info.value) and "a.png" in str(info.value)


# ---------------------------------------------------------------- TrainPatches
@pytest.fixture
def blocky_set(tmp_path: Path) -> list[ImagePair]:
    """HR made of constant 2x2 blocks with the block values shipped as LR: patches can be checked
    for alignment under every flip/rotation with hr_patch[::2, ::2] == lr_patch."""
    pairs = []
    for k, (h, w) in enumerate([(20, 24), (18, 30), (26, 16)]):
        lr = _img(h, w, seed=k)
        write_image(tmp_path / "HR" / f"{k}.png", np.kron(lr, np.ones((2, 2, 1), np.uint8)))
        write_image(tmp_path / "LR_bicubic" / "X2" / f"{k}x2.png", lr)
    pairs = find_pairs(tmp_path, 2)
    assert all(p.lr_path is not None for p in pairs)
    return pairs


def test_train_patches_are_aligned_and_deterministic(blocky_set: list[ImagePair], tmp_path: Path) -> None:
    a = TrainPatches(blocky_set, 2, 8, length=64, seed=7, cache_dir=tmp_path)
    b = TrainPatches(blocky_set, 2, 8, length=64, seed=7, cache_dir=tmp_path, preload=False)
    c = TrainPatches(blocky_set, 2, 8, length=64, seed=8, cache_dir=tmp_path)
    assert len(a) == 64
    for i in (63, 0, 17, 17):
        x, y = a[i], b[i]
        assert x["lr"].shape == (3, 8, 8) and x["hr"].shape == (3, 16, 16)
        assert torch.equal(x["lr"], y["lr"]) and torch.equal(x["hr"], y["hr"])
        assert torch.equal(x["hr"][:, ::2, ::2], x["lr"])
    assert not torch.equal(a[5]["lr"], c[5]["lr"])
    with pytest.raises(IndexError):
        a[64]


def test_augmentation_covers_all_8_dihedral_variants(tmp_path: Path) -> None:
    write_image(tmp_path / "one.png", _img(12, 12))
    pairs = find_pairs(tmp_path, 2)
    # Patch = whole LR image, so items differ only by their flip/rotation.
    aug = TrainPatches(pairs, 2, 6, length=200, seed=0, cache_dir=tmp_path / "c")
    variants = {aug[i]["lr"].numpy().tobytes() for i in range(200)}
    assert len(variants) == 8
    plain = TrainPatches(pairs, 2, 6, length=20, seed=0, augment=False, cache_dir=tmp_path / "c")
    assert len({plain[i]["lr"].numpy().tobytes() for i in range(20)}) == 1


def test_smooth_patches_are_picked_on_purpose_and_zero_keeps_the_uniform_draws(tmp_path: Path) -> None:
    """An image that is flat grey on its left quarter and noise elsewhere: uniform crops rarely land
    on the flat part; with smooth_fraction=1 (the flattest of 16 positions) most patches are flat,
    and smooth_fraction=0 draws exactly the old uniform crops."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)
    img[:, :32] = 128
    write_image(tmp_path / "half.png", np.kron(img, np.ones((2, 2, 1), np.uint8)))
    pairs = find_pairs(tmp_path, 2)

    def flat_share(data: TrainPatches) -> float:
        return sum(float(data[i]["lr"].std()) < 1e-3 for i in range(len(data))) / len(data)

    uniform = TrainPatches(pairs, 2, 8, length=200, seed=0, cache_dir=tmp_path / "c")
    smooth = TrainPatches(pairs, 2, 8, length=200, seed=0, cache_dir=tmp_path / "c", smooth_fraction=1.0)
    half = TrainPatches(pairs, 2, 8, length=200, seed=0, cache_dir=tmp_path / "c", smooth_fraction=0.5)
    assert flat_share(uniform) < 0.3 and flat_share(smooth) > 0.95
    assert flat_share(uniform) < flat_share(half) < flat_share(smooth)
    zero = TrainPatches(pairs, 2, 8, length=20, seed=0, cache_dir=tmp_path / "c", smooth_fraction=0.0)
    assert all(torch.equal(zero[i]["lr"], uniform[i]["lr"]) for i in range(20))
    with pytest.raises(ValueError, match="smooth_fraction"):
        TrainPatches(pairs, 2, 8, length=4, seed=0, cache_dir=tmp_path / "c", smooth_fraction=1.5)


def test_too_small_image_is_rejected_at_construction(tmp_path: Path) -> None:
    write_image(tmp_path / "tiny.png", _img(40, 90))
    with pytest.raises(DatasetError, match="tiny.png") as info:
        TrainPatches(find_pairs(tmp_path, 4), 4, 12, length=4, seed=0, cache_dir=tmp_path / "c")
    assert "90x40" in str(info.value) and "12x12" in str(info.value)


def _batches(loader: torch.utils.data.DataLoader) -> list[torch.Tensor]:
    return [batch["lr"] for batch in loader]


def test_loader_resume_matches_uninterrupted_run(blocky_set: list[ImagePair], tmp_path: Path) -> None:
    data = TrainPatches(blocky_set, 2, 8, length=6 * 4, seed=3, cache_dir=tmp_path)
    full = _batches(build_train_loader(data, batch_size=4, workers=0))
    assert len(full) == 6 and full[0].shape == (4, 3, 8, 8)
    resumed = _batches(build_train_loader(data, batch_size=4, workers=2, start_step=4))
    assert len(resumed) == 2
    for x, y in zip(full[4:], resumed, strict=True):
        assert torch.equal(x, y)
    assert _batches(build_train_loader(data, batch_size=4, workers=0, start_step=6)) == []
    # two ranks split each step's global batch without overlap
    halves = [_batches(build_train_loader(data, batch_size=2, workers=0, rank=r, world=2)) for r in (0, 1)]
    for t, x in enumerate(full):
        assert torch.equal(torch.cat([halves[0][t], halves[1][t]]), x)


# ---------------------------------------------------------------- built-in set and open_dataset
def test_builtin_val_is_idempotent_and_usable(tmp_path: Path) -> None:
    pairs = builtin_pairs("val", tmp_path)
    assert [p.name for p in pairs] == sorted(Path(n).stem for n in BUILTIN_VAL)
    mtimes = [p.hr_path.stat().st_mtime_ns for p in pairs]
    assert open_dataset("builtin:val", 4, tmp_path) == pairs
    assert [p.hr_path.stat().st_mtime_ns for p in pairs] == mtimes  # not rewritten
    assert find_pairs(tmp_path / "builtin" / "val", 4) == pairs  # looks like a benchmark folder
    item = EvalImages(pairs, 4, tmp_path)[0]
    assert item["lr"].shape[0] == 3 and item["hr"].shape[1] == 4 * item["lr"].shape[1]


def test_builtin_split_is_disjoint_rgb_and_errors() -> None:
    assert not set(BUILTIN_TRAIN) & set(BUILTIN_VAL)
    assert "color.png" not in BUILTIN_TRAIN + BUILTIN_VAL
    with pytest.raises(DatasetError, match="builtin:test"):
        open_dataset("builtin:test", 2)
    with pytest.raises(ValueError):
        builtin_pairs("test")  # type: ignore[arg-type]


def test_builtin_train_images_are_rgb(tmp_path: Path) -> None:
    pairs = open_dataset("builtin:train", 4, tmp_path)
    assert len(pairs) == len(BUILTIN_TRAIN)
    for p in pairs:
        img = read_image(p.hr_path)
        assert img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) >= 192


def test_preload_budget_streams_a_large_set_with_identical_items(tiny_photos) -> None:
    pairs = find_pairs(tiny_photos["train"], 2)
    kept = TrainPatches(pairs, 2, 16, length=6, seed=0)
    assert kept.preloaded and kept.decoded_bytes == sum(48 * 48 * 3 + 24 * 24 * 3 for _ in pairs)
    streamed = TrainPatches(pairs, 2, 16, length=6, seed=0, preload_max_bytes=kept.decoded_bytes - 1)
    assert not streamed.preloaded
    for i in range(6):  # streaming decodes per item: the same patches, only slower
        a, b = kept[i], streamed[i]
        assert torch.equal(a["lr"], b["lr"]) and torch.equal(a["hr"], b["hr"])
    assert TrainPatches(pairs, 2, 16, length=1, seed=0, preload_max_bytes=kept.decoded_bytes).preloaded


def test_recipe_preload_budget_is_checked() -> None:
    from edgesr.errors import RecipeError
    from edgesr.recipe import load_recipe, resolve_recipe

    with pytest.raises(RecipeError, match=r"data\.preload_max_gb.*must be >= 0"):
        load_recipe(resolve_recipe("quickstart_teacher"), ["data.preload_max_gb=-1"])
