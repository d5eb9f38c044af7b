"""Real photographs for quantization evaluation, fetched from Debian packages (never committed).

    python -m benchmarks real-photos                 # fetch + verify + crop into the cache
    python -m benchmarks real-photos --list          # the table below, with each photo's tags
    python -m benchmarks real-photos --cache DIR     # default: $EDGESR_CACHE/photos or ~/.cache/edgesr/photos

What it does, step by step (no shell: every command is an argument list):
1. `apt-get download PKG=VERSION` for each package of PACKAGES, into CACHE/debs;
2. `dpkg -x PKG.deb CACHE/pkgs/PKG` (unpacks the files, installs nothing);
3. copies each photo of PHOTOS to CACHE/orig/NAME.jpg and checks its sha256 (a mismatch is an error:
   the set is fixed, so numbers measured on it are comparable across runs and machines);
4. writes the evaluation images as 8-bit PNG:
   - CACHE/quant-eval/NAME.png: the photo shrunk to 1280 px wide with edgesr's MATLAB-exact bicubic
     (antialiased, which also removes most JPEG blocking), then a centre crop of 640x360 HR;
   - CACHE/calib/NAME.png: the whole photo shrunk to 1280 px wide (for calibration experiments).

Splits. `quant-eval` (14 photos) is only ever measured on: never used for calibration, training or
to choose a hyper-parameter's search range. `calib` (9 other photos, some with sky or bokeh) is for
calibration / QAT-data experiments. The built-in train and val photos of edgesr are neither.
The quant-eval set is chosen to cover the cases where int8 SR fails: smooth gradients and skies,
calm water and fog, bokeh, dark and bright scenes, plus textured ones (foliage, architecture).

Licences: mate-backgrounds' debian/copyright lists each photo's author under GPL-2+;
plasma-workspace-wallpapers' debian/copyright gives GPL-2+ for the package (KDE Visual Design
Group) and each wallpaper's metadata.json says LGPLv3 with the author named below.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

PACKAGES: dict[str, str] = {  # Debian bookworm, main
    "mate-backgrounds": "1.26.0-1",
    "plasma-workspace-wallpapers": "4:5.27.5-2",
}
_MATE = "usr/share/backgrounds/mate/nature/{}.jpg"
_PLASMA = "usr/share/wallpapers/{}/contents/images/2560x1600.jpg"
_MATE_LIC = "GPL-2+ (mate-backgrounds debian/copyright)"
_PLASMA_LIC = "GPL-2+ (debian/copyright) / LGPLv3 (metadata.json)"


@dataclass(frozen=True)
class Photo:
    name: str
    package: str
    path: str  # inside the package
    sha256: str
    author: str
    licence: str
    tags: str  # what the photo exercises: smooth, sky, water, fog, bokeh, dark, bright, textured
    split: str  # quant-eval | calib


PHOTOS: tuple[Photo, ...] = (
    # --- quant-eval: measured only -------------------------------------------------------------
    Photo("summer_1am", "plasma-workspace-wallpapers", _PLASMA.format("summer_1am"),
          "c868b50789591dd42910153c768053f1ba0a98cb36bbfc2b7a96a1045d0477f8", "Risto Saukonpää",
          _PLASMA_LIC, "smooth gradient sky, calm water", "quant-eval"),
    Photo("DarkestHour", "plasma-workspace-wallpapers", _PLASMA.format("DarkestHour"),
          "8e3703fae3a3c217b1fc2b399b706cd3720584268d071ba153e4809daa55f1ce", "Risto Saukonpää",
          _PLASMA_LIC, "dark, smooth, calm water", "quant-eval"),
    Photo("ColdRipple", "plasma-workspace-wallpapers", _PLASMA.format("ColdRipple"),
          "05bef6722fc0ed81292cceb3ed026c38d17e510f3c84be7d68610c2b1a723c3f", "Risto Saukonpää",
          _PLASMA_LIC, "grey fog, smooth, pier", "quant-eval"),
    Photo("Kite", "plasma-workspace-wallpapers", _PLASMA.format("Kite"),
          "bdca288ce296a981e80659c021cf707caddc702c0c8d4247e60bd618476d47f8", "Risto Saukonpää",
          _PLASMA_LIC, "blue sky, clouds", "quant-eval"),
    Photo("Aqua", "mate-backgrounds", _MATE.format("Aqua"),
          "5c30118205982da441bf7e6a1ada636a8a0be879408140b3148280c665ed6bce", "Charles Barbin",
          _MATE_LIC, "bright, smooth water, splash", "quant-eval"),
    Photo("Storm", "mate-backgrounds", _MATE.format("Storm"),
          "77ca53077831d3237f73393a91fc879158abc046d852941c26e90de336356957", "Sergey Nazarov",
          _MATE_LIC, "dark smooth sky, motion blur", "quant-eval"),
    Photo("TwoWings", "mate-backgrounds", _MATE.format("TwoWings"),
          "665e5abf8a5399070a91a9a8e455fe071e5b61697ff78fdeda4e9843ef545aeb", "Charles Barbin",
          _MATE_LIC, "bokeh, fine seeds", "quant-eval"),
    Photo("FallenLeaf", "plasma-workspace-wallpapers", _PLASMA.format("FallenLeaf"),
          "95603a6560c7e8d50e0e03b3f4adbe39c5258c72528e74e4ecaea1daf4e499de", "Martin Klapetek",
          _PLASMA_LIC, "leaf on bokeh", "quant-eval"),
    Photo("Wood", "mate-backgrounds", _MATE.format("Wood"),
          "19c78500ac00a622e19907ab9cc7d06d46fe08c4a6142759a84195696150ec07", "Jean-François Fortin Tam",
          _MATE_LIC, "bright, low-contrast wood grain", "quant-eval"),
    Photo("Path", "plasma-workspace-wallpapers", _PLASMA.format("Path"),
          "7477457d7f17b736259f1b021864778ad4ba802cf3214e6728181ff29126bba8", "Risto Saukonpää",
          _PLASMA_LIC, "textured forest, dark", "quant-eval"),
    Photo("OneStandsOut", "plasma-workspace-wallpapers", _PLASMA.format("OneStandsOut"),
          "cb507baf1dafdcae362264f3aba9483ed4be5f6c9fdd770f0ec0920c6d9e80fd", "Risto Saukonpää",
          _PLASMA_LIC, "textured moss", "quant-eval"),
    Photo("EveningGlow", "plasma-workspace-wallpapers", _PLASMA.format("EveningGlow"),
          "586682dcb362b9f620068f10138f87d0d3649939aef238adc5807cb951976a7a", "Ian Hex",
          _PLASMA_LIC, "textured boats, sunset sky", "quant-eval"),
    Photo("Grey", "plasma-workspace-wallpapers", _PLASMA.format("Grey"),
          "88c31d8944b7e6935d1b9a296654c692f0772cb512491713eb30a972a604c0ed", "Sigi Sagi",
          _PLASMA_LIC, "architecture, black and white, high contrast", "quant-eval"),
    Photo("ColorfulCups", "plasma-workspace-wallpapers", _PLASMA.format("ColorfulCups"),
          "6e0f3a72feb5a4a9fec191b77e34874c3c69e2d93040deb3f07773e73385023d", "Dmitri Popov",
          _PLASMA_LIC, "saturated colour, edges", "quant-eval"),
    # --- calib: for calibration / QAT-data experiments, never measured in the quant-eval tables ---
    Photo("BytheWater", "plasma-workspace-wallpapers", _PLASMA.format("BytheWater"),
          "c272434ef39f2abf1ed48a15a8910088020f3165329a5092f3940ec9464bc05f", "Maciej Wiklo",
          _PLASMA_LIC, "bright, sky, water, wood", "calib"),
    Photo("Garden", "mate-backgrounds", _MATE.format("Garden"),
          "d3095ee09d425ef23d27155412136cf14fc3c9af76ca58b452f55e23da324e78", "Charles Barbin",
          _MATE_LIC, "bokeh, flower", "calib"),
    Photo("Dune", "mate-backgrounds", _MATE.format("Dune"),
          "8a67c2cb0be8c46b70c237311a4fa4d2b4ac7d39568135384787801fa5cc9a91", "Marco Cogoni",
          _MATE_LIC, "sky, sea, grass", "calib"),
    Photo("GreenMeadow", "mate-backgrounds", _MATE.format("GreenMeadow"),
          "8fa0de0aa4089f7319c9fb7a6d006d4cab6023e8c8853731557cff53567b4832", "Timothy Schellhase",
          _MATE_LIC, "textured grass", "calib"),
    Photo("Blinds", "mate-backgrounds", _MATE.format("Blinds"),
          "f7aac0dcc2e06d0491643e84df3da1d9db7c4610f58806a880d56e074799f600", "Lennart Poettering",
          _MATE_LIC, "leaf veins, green", "calib"),
    Photo("LadyBird", "mate-backgrounds", _MATE.format("LadyBird"),
          "e35a9a4126ef969c90b29c038058c5a575a20eadd84106a37bf1fa9931e7b61d", "Charles Barbin",
          _MATE_LIC, "bokeh, flowers", "calib"),
    Photo("RainDrops", "mate-backgrounds", _MATE.format("RainDrops"),
          "3e4ea9671c28c90a86cf67b3db9daf18c4741587c596333a7529ca589aaa0c16", "blackcombwhistler07",
          _MATE_LIC, "leaves, drops", "calib"),
    Photo("YellowFlower", "mate-backgrounds", _MATE.format("YellowFlower"),
          "254da96256acb7add685679775a04d1e4a5bc8cd13e5a5a3d61351ce198a5306", "Charles Barbin",
          _MATE_LIC, "bright yellow, dark background", "calib"),
    Photo("FreshFlower", "mate-backgrounds", _MATE.format("FreshFlower"),
          "972b0a0c4e5e3fa93f4f244fc84bc64b121a5eac3aaa5856f1308c1f38a02f8e", "Jens Ansorg",
          _MATE_LIC, "saturated orange petals", "calib"),
)  # fmt: skip

SPLITS = ("quant-eval", "calib")
WIDTH = 1280  # every photo is first shrunk to this width (MATLAB bicubic)
CROP = (360, 640)  # quant-eval HR centre crop (h, w)


def default_cache() -> Path:
    env = os.environ.get("EDGESR_CACHE")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "edgesr") / "photos"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _unpack(package: str, version: str, cache: Path) -> Path:
    """CACHE/pkgs/PACKAGE with the package's files (apt-get download + dpkg -x, nothing installed)."""
    root = cache / "pkgs" / package
    if root.is_dir():
        return root
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        subprocess.run(["apt-get", "download", f"{package}={version}"], cwd=debs, check=True)
        found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        raise RuntimeError(f"apt-get download {package}={version} left no .deb in {debs}")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{package}-"))
    subprocess.run(["dpkg", "-x", str(found[-1]), str(tmp)], check=True)
    tmp.rename(root)
    return root


def fetch(cache: Path | None = None, *, verbose: bool = True) -> Path:
    """Fetch, verify and crop every photo into `cache`; returns it. Idempotent."""
    import numpy as np

    from edgesr.data.bicubic import imresize
    from edgesr.data.images import read_image, write_image

    cache = Path(cache or default_cache())
    cache.mkdir(parents=True, exist_ok=True)
    roots = {p: _unpack(p, v, cache) for p, v in PACKAGES.items()}
    for split in SPLITS:
        (cache / split).mkdir(exist_ok=True)
    (cache / "orig").mkdir(exist_ok=True)
    for ph in PHOTOS:
        orig = cache / "orig" / f"{ph.name}.jpg"
        if not orig.is_file():
            shutil.copyfile(roots[ph.package] / ph.path, orig)
        digest = _sha256(orig)
        if digest != ph.sha256:
            raise RuntimeError(f"{ph.name}: sha256 {digest} != {ph.sha256} (from {ph.package} {ph.path})")
        out = cache / ph.split / f"{ph.name}.png"
        if out.is_file():
            continue
        img = read_image(orig)
        h, w = img.shape[:2]
        if w > WIDTH:
            img = imresize(img, output_shape=(round(h * WIDTH / w), WIDTH))
        if ph.split == "quant-eval":
            ch, cw = CROP
            top, left = (img.shape[0] - ch) // 2, (img.shape[1] - cw) // 2
            img = np.ascontiguousarray(img[top : top + ch, left : left + cw])
        write_image(out, img)
        if verbose:
            print(f"{ph.split:10s} {ph.name:14s} {img.shape[1]}x{img.shape[0]}  {ph.tags}")
    return cache


def load_split(split: str = "quant-eval", scale: int = 2, cache: Path | None = None) -> list[dict]:
    """[{name, lr, hr}] for `split` (fetching if needed): HR 3xHxW in [0, 1], LR by MATLAB bicubic."""
    from edgesr.data.bicubic import degrade, modcrop
    from edgesr.data.images import read_image, to_tensor

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    cache = fetch(cache, verbose=False)
    items = []
    for ph in PHOTOS:
        if ph.split != split:
            continue
        hr = modcrop(read_image(cache / split / f"{ph.name}.png"), scale)
        items.append(
            {"name": ph.name, "tags": ph.tags, "lr": to_tensor(degrade(hr, scale)), "hr": to_tensor(hr)}
        )
    return items


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("real-photos", help="fetch the real-photo quant-eval / calib sets (Debian packages)")
    p.add_argument(
        "--cache", type=Path, default=None, help="default: $EDGESR_CACHE/photos or ~/.cache/edgesr/photos"
    )
    p.add_argument("--list", action="store_true", help="print the table and exit")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.list:
        print("| split | name | package | file | licence | author | sha256 | tags |")
        print("|---|---|---|---|---|---|---|---|")
        for ph in PHOTOS:
            print(f"| {ph.split} | {ph.name} | {ph.package} {PACKAGES[ph.package]} | /{ph.path} | "
                  f"{ph.licence} | {ph.author} | `{ph.sha256}` | {ph.tags} |")  # fmt: skip
        return 0
    cache = fetch(args.cache)
    print(f"photos in {cache} ({', '.join(f'{s}/' for s in SPLITS)})")
    return 0
