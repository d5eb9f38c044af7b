"""Bad files through every command that reads that kind of file: exit 1, one line, no traceback, the
file named. A new reader of a kind of file joins the table (CASES); a new kind of bad file joins its
maker (BAD_*).

Each case is a command line with `{bad}` where the bad file goes and `{...}` for the fixtures
(a tiny trained run, exported artifacts, a photo). Nothing is written where the user had data:
each case runs on fresh copies.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgesr.cli import main
from edgesr.train.checkpoint import CheckpointMeta, save_checkpoint

DATA = Path(__file__).parent / "profile" / "data"


class Payload:
    """A pickle that would run code if loaded unsafely; the test fails if the marker file appears."""

    marker = ""

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _png_header_only(w: int, h: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# --- bad files, by kind: name -> writer(path, fixtures) ------------------------------------------


def _photo_bytes(fx) -> bytes:
    return fx["photo"].read_bytes()


BAD_IMAGES = {
    "garbage": lambda p, fx: p.write_bytes(os.urandom(2000)),
    "empty": lambda p, fx: p.write_bytes(b""),
    "truncated": lambda p, fx: p.write_bytes(_photo_bytes(fx)[:600]),
    "bomb_60000x60000": lambda p, fx: p.write_bytes(_png_header_only(60000, 60000)),
}

# 9 levels of 9 aliases each: 9^9 = 387 million strings from a few hundred bytes
_LAUGHS = 'a: &a ["l","l","l","l","l","l","l","l","l"]\n' + "".join(
    f"{new}: &{new} [{', '.join([f'*{old}'] * 9)}]\n" for old, new in zip("abcdefgh", "bcdefghi", strict=True)
)

BAD_RECIPES = {
    "billion_laughs": lambda p, fx: p.write_text(_LAUGHS),
    "duplicate_key": lambda p, fx: p.write_text("name: a\nname: b\nscale: 2\n"),
    "n_feats_0": lambda p, fx: p.write_text(
        "name: x\nscale: 2\nmodel: {name: edsr, args: {n_feats: 0}}\ndata: {train: builtin:train}\n"
        "train: {mode: single, widths: [1.0], steps: 2}\n"
    ),
    "n_resblocks_negative": lambda p, fx: p.write_text(
        "name: x\nscale: 2\nmodel: {name: edsr, args: {n_resblocks: -1}}\ndata: {train: builtin:train}\n"
        "train: {mode: single, widths: [1.0], steps: 2}\n"
    ),
    "binary": lambda p, fx: p.write_bytes(b"\x00\xff\xfe" * 50),
    "a_list": lambda p, fx: p.write_text("- a\n- b\n"),
}


def _pickle(p: Path, fx) -> None:
    Payload.marker = str(fx["marker"])
    torch.save({"step": Payload()}, p)


BAD_STATES = {  # a run directory's state.pt, given to --resume
    "pickle_payload": _pickle,
    "truncated": lambda p, fx: p.write_bytes(p.read_bytes()[:300]),
    "garbage": lambda p, fx: p.write_bytes(os.urandom(500)),
}

BAD_WEIGHTS = {  # a run directory's model.safetensors
    "truncated": lambda p, fx: p.write_bytes(p.read_bytes()[:200]),
    "garbage": lambda p, fx: p.write_bytes(os.urandom(500)),
    "another_model": lambda p, fx: shutil.copy(fx["other_weights"], p),
}

BAD_TEACHERS = {  # a file given as train.init or train.csd.vgg_weights
    "pickle_payload": _pickle,
    "truncated": lambda p, fx: p.write_bytes(pickle.dumps({"a": 1})[:5]),
    "garbage": lambda p, fx: p.write_bytes(os.urandom(700)),
}

BAD_ARTIFACTS = {  # an exported artifact next to its (good) manifest
    "truncated": lambda p, fx: p.write_bytes(p.read_bytes()[:5000]),
    "garbage": lambda p, fx: p.write_bytes(os.urandom(6000)),
}

BAD_MANIFESTS = {
    "key_removed": lambda p, fx: _edit_manifest(p, lambda m: m.pop("model")),
    "not_json": lambda p, fx: p.write_text("{not json"),
    "input_shape_edited": lambda p, fx: _edit_manifest(p, lambda m: m["input"].update(shape=[1, 3, 7, 9])),
    "shape_not_nchw": lambda p, fx: _edit_manifest(p, lambda m: m["input"].update(shape=[1, 3])),
}

BAD_REPORTS = {  # benchmark tool output given to `profile import`
    "benchmark_model_cut_after_warmup": lambda p, fx: p.write_text(
        "".join((DATA / "benchmark_model_cpu.txt").read_text().splitlines(keepends=True)[:15])
    ),
    "executor_runner_cut": lambda p, fx: p.write_text(
        "".join((DATA / "executor_runner_iterations.txt").read_text().splitlines(keepends=True)[:8])
    ),
    "garbage": lambda p, fx: p.write_bytes(os.urandom(300)),
    "aihub_json_cut": lambda p, fx: p.write_text((DATA / "aihub_profile.json").read_text()[:400]),
}

BAD_DEVICES = {
    "aliases": lambda p, fx: p.write_text("name: &n x\ndisplay: *n\n"),
    "garbage": lambda p, fx: p.write_bytes(b"\x00\x01" * 40),
    "wrong_type": lambda p, fx: p.write_text("name: d\nthreads: many\n"),
}


def _edit_manifest(path: Path, edit) -> None:
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("bad_inputs")
    rng = np.random.default_rng(0)
    photo = root / "photo.png"
    Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)).save(photo)
    photos = root / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray((rng.random((48, 48, 3)) * 255).astype(np.uint8)).save(photos / f"{i}.png")
    recipe = root / "tiny.yaml"
    recipe.write_text(
        f"name: tiny\nscale: 2\nmodel: {{name: edsr, args: {{n_resblocks: 1, n_feats: 16}}}}\n"
        f"data: {{train: {photos}, val: [{photos}], patch_size: 8, batch_size: 2, workers: 0}}\n"
        "train: {mode: single, widths: [1.0], steps: 2, checkpoint_every: 2, val_every: 100, log_every: 1}\n"
    )
    assert main(["train", str(recipe), "--run-dir", str(root / "run")]) == 0
    torch.manual_seed(0)
    from edgesr.models import build_model

    other = build_model("rcan", scale=2, n_resgroups=1, n_resblocks=1, n_feats=16)
    meta = CheckpointMeta(other.arch, 2, (1.0,), None, "r", 1)
    other_dir = save_checkpoint(root / "other", other, meta, None)
    artifacts = {}
    for target in ("onnx", "tflite", "executorch"):
        out = root / "exports" / target
        code = main(["export", str(root / "run"), "--target", target, "--input", "1x3x24x32",
                     "--out", str(out)])  # fmt: skip
        assert code == 0, target
        artifacts[target] = next(p for p in out.iterdir() if p.suffix in (".onnx", ".tflite", ".pte"))
    return {
        "root": root, "photo": photo, "photos": photos, "recipe": recipe, "run": root / "run",
        "other_weights": other_dir / "model.safetensors", "artifacts": artifacts,
        "marker": root / "PAYLOAD_RAN",
    }  # fmt: skip


def _copy_run(fx, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(fx["run"], run)
    # a run that stopped before its end, so --resume reads its checkpoint (a completed one is a no-op)
    (run / "status.json").write_text(json.dumps({"state": "stopped", "step": 2}))
    (run / "results.json").unlink()
    return run


def _latest(run: Path) -> Path:
    return run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()


def _artifact_copy(fx, tmp_path: Path, target: str) -> Path:
    src = fx["artifacts"][target]
    dst = tmp_path / src.name
    shutil.copy(src, dst)
    shutil.copy(src.with_name(src.name + ".json"), dst.with_name(dst.name + ".json"))
    return dst


# --- the table: (kind, command) -> how to build the case ---------------------------------------


def _cmd(line: str, *extra: str) -> list[str]:
    return [*line.split(), *extra]


RUNS_1 = "--runs 1 --warmup 1"


def _image_cases():
    for name in BAD_IMAGES:
        yield f"upscale-image-{name}", "image", name, _cmd("upscale {bad} --checkpoint {run} --out {out}.png")
        yield f"eval-folder-{name}", "image_in_folder", name, _cmd("eval {run} --data {bad_dir}")
        train = "train {recipe} data.train={bad_dir} --run-dir {out}"
        yield f"train-data-{name}", "image_in_folder", name, _cmd(train)


def _recipe_cases():
    for name in BAD_RECIPES:
        yield f"recipes-validate-{name}", "recipe", name, _cmd("recipes validate {bad}")
        yield f"train-{name}", "recipe", name, _cmd("train {bad} --run-dir {out}")
        select = "select-width --device host --budget-ms 30 --recipe {bad}"
        yield f"select-width-{name}", "recipe", name, _cmd(select)


def _checkpoint_cases():
    for name in BAD_STATES:
        yield f"resume-state-{name}", "state", name, _cmd("train --resume {run_copy}")
    for name in BAD_WEIGHTS:
        yield f"resume-weights-{name}", "weights", name, _cmd("train --resume {run_copy}")
        if name != "another_model":  # another model's weights are a good checkpoint for these
            yield f"eval-weights-{name}", "weights", name, _cmd("eval {run_copy} --data {photos}")
            upscale = "upscale {photo} --checkpoint {run_copy} --out {out}.png"
            yield f"upscale-weights-{name}", "weights", name, _cmd(upscale)
            export = "export {run_copy} --target onnx --out {out}"
            yield f"export-weights-{name}", "weights", name, _cmd(export)
    for name in BAD_TEACHERS:
        distill = 'train.mode=distill train.widths=[0.5] train.init={bad} train.losses=[{{"name":"l1"}}]'
        yield f"train-init-{name}", "teacher", name, _cmd(f"train {{recipe}} {distill} --run-dir {{out}}")
        csd = "train.mode=csd train.widths=[0.5] train.csd.vgg_weights={bad}"
        yield f"train-vgg-{name}", "teacher", name, _cmd(f"train {{recipe}} {csd} --run-dir {{out}}")


def _artifact_cases():
    for target in ("onnx", "tflite", "executorch"):
        for name in BAD_ARTIFACTS:
            for trust in ([], ["--trust-artifact"]):
                tag, kind = f"{target}-{name}{'-trusted' if trust else ''}", f"artifact:{target}"
                upscale = "upscale {photo} --artifact {bad} --out {out}.png"
                yield f"upscale-artifact-{tag}", kind, name, _cmd(upscale, *trust)
                run = f"profile run {{bad}} --device host --no-save {RUNS_1}"
                yield f"profile-run-{tag}", kind, name, _cmd(run, *trust)
            yield f"inspect-{target}-{name}", f"artifact:{target}", name, _cmd("inspect {bad}")
    for name in BAD_MANIFESTS:
        upscale = "upscale {photo} --artifact {artifact} --out {out}.png"
        yield f"upscale-manifest-{name}", "manifest", name, _cmd(upscale)
        run = f"profile run {{artifact}} --device host --no-save {RUNS_1}"
        yield f"profile-run-manifest-{name}", "manifest", name, _cmd(run)
        if name != "input_shape_edited":  # the manifest still reads; the runtime refuses the shape
            yield f"inspect-manifest-{name}", "manifest", name, _cmd("inspect {artifact}")


def _profile_cases():
    for name in BAD_REPORTS:
        imp = "profile import {bad} --device pixel8 --profiles {out}"
        yield f"profile-import-{name}", "report", name, _cmd(imp)
    for name in BAD_DEVICES:
        yield f"profile-show-device-{name}", "device", name, _cmd("profile show --device {bad}")
        select = "select-width --device {bad} --budget-ms 30"
        yield f"select-width-device-{name}", "device", name, _cmd(select)


CASES = [*_image_cases(), *_recipe_cases(), *_checkpoint_cases(), *_artifact_cases(), *_profile_cases()]


def _make(kind: str, name: str, fx, tmp_path: Path) -> dict:
    """Write the bad file of `kind`/`name`; return the placeholders of the command line."""
    subs = {"run": fx["run"], "recipe": fx["recipe"], "photo": fx["photo"], "photos": fx["photos"],
            "out": tmp_path / "out"}  # fmt: skip
    if kind == "image":
        bad = tmp_path / f"{name}.png"
        BAD_IMAGES[name](bad, fx)
    elif kind == "image_in_folder":
        folder = tmp_path / "images"
        shutil.copytree(fx["photos"], folder)
        bad = folder / f"{name}.png"
        BAD_IMAGES[name](bad, fx)
        subs["bad_dir"] = folder
    elif kind == "recipe":
        bad = tmp_path / f"{name}.yaml"
        BAD_RECIPES[name](bad, fx)
    elif kind in ("state", "weights"):
        run = _copy_run(fx, tmp_path)
        bad = _latest(run) / ("state.pt" if kind == "state" else "model.safetensors")
        (BAD_STATES if kind == "state" else BAD_WEIGHTS)[name](bad, fx)
        subs["run_copy"] = run
    elif kind == "teacher":
        bad = tmp_path / f"{name}.pt"
        BAD_TEACHERS[name](bad, fx)
    elif kind.startswith("artifact:"):
        bad = _artifact_copy(fx, tmp_path, kind.split(":")[1])
        BAD_ARTIFACTS[name](bad, fx)
    elif kind == "manifest":
        artifact = _artifact_copy(fx, tmp_path, "onnx")
        bad = artifact.with_name(artifact.name + ".json")
        BAD_MANIFESTS[name](bad, fx)
        subs["artifact"] = artifact
    elif kind == "report":
        bad = tmp_path / f"{name}.txt"
        BAD_REPORTS[name](bad, fx)
    elif kind == "device":
        bad = tmp_path / f"{name}.yaml"
        BAD_DEVICES[name](bad, fx)
    else:
        raise AssertionError(kind)
    subs["bad"] = bad
    return subs


@pytest.mark.parametrize(("case", "kind", "name", "argv"), CASES, ids=[c[0] for c in CASES])
def test_bad_file_gives_one_line_naming_it(case, kind, name, argv, fx, tmp_path, capsys):
    subs = _make(kind, name, fx, tmp_path)
    # every file the command could read or write: this case's and the shared fixtures'
    before = {p: p.read_bytes() for root in (tmp_path, fx["root"]) for p in root.rglob("*") if p.is_file()}
    capsys.readouterr()
    code = main([a.format(**subs) for a in argv])
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 1, f"exit {code}\n{err[-3000:]}"
    assert "Traceback" not in err and "weights_only=False" not in err, err[-3000:]
    assert len(lines) == 1, err[-3000:]
    named = {str(subs["bad"]), subs["bad"].name}
    if kind == "image_in_folder":
        named.add(str(subs["bad"].parent))
    if kind == "manifest":  # the artifact it describes is named (the manifest is its name + .json)
        named.add(subs["artifact"].name)
    assert any(n and n in lines[0] for n in named), f"the line does not name {subs['bad']}: {lines[0]}"
    assert not fx["marker"].exists(), "a pickle payload ran"
    after = {p: p.read_bytes() for p in before if p.is_file()}
    assert after == before, "a bad input changed or removed a file the user had"
