"""Tiny official-layout teachers served as zoo entries by the loopback server: nothing leaves 127.0.0.1.

`serve(monkeypatch, server, "edsr_x2", n_feats=16, n_resblocks=2)` shrinks the real entry's
architecture to a tiny one, serves a matching ``torch.save`` d state dict under the entry's real file
name, pins the entry's hash prefix to that file's sha256 and points EDGESR_ZOO_MIRROR at the server.
(tests/models/test_official.py checks the official layout itself against re-implemented modules.)
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from typing import Any

import pytest
import torch

from edgesr.models import zoo

DIV2K_MEAN = (0.4488, 0.4371, 0.4040)


def official_state(
    arch: str = "edsr", scale: int = 2, n_feats: int = 16, n_resblocks: int = 2, n_resgroups: int = 2,
    reduction: int = 4, seed: int = 0, **_: Any,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """A random state dict with the official EDSR-PyTorch / RCAN key names and shapes."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def conv(key: str, cout: int, cin: int, k: int = 3) -> None:
        state[f"{key}.weight"] = torch.randn(cout, cin, k, k, generator=g) * 0.05
        state[f"{key}.bias"] = torch.rand(cout, generator=g) * 2 - 1

    F = n_feats
    mean = torch.tensor(DIV2K_MEAN)
    state |= {"sub_mean.weight": torch.eye(3).view(3, 3, 1, 1), "sub_mean.bias": -255 * mean}
    conv("head.0", F, 3)
    if arch == "edsr":
        for i in range(n_resblocks):
            conv(f"body.{i}.body.0", F, F)
            conv(f"body.{i}.body.2", F, F)
        conv(f"body.{n_resblocks}", F, F)
    else:
        for gi in range(n_resgroups):
            for b in range(n_resblocks):
                conv(f"body.{gi}.body.{b}.body.0", F, F)
                conv(f"body.{gi}.body.{b}.body.2", F, F)
                conv(f"body.{gi}.body.{b}.body.3.conv_du.0", F // reduction, F, 1)
                conv(f"body.{gi}.body.{b}.body.3.conv_du.2", F, F // reduction, 1)
            conv(f"body.{gi}.body.{n_resblocks}", F, F)
        conv(f"body.{n_resgroups}", F, F)
    if scale == 3:
        conv("tail.0.0", 9 * F, F)
    else:
        for j in range(scale.bit_length() - 1):
            conv(f"tail.0.{2 * j}", 4 * F, F)
    conv("tail.1", 3, F)
    state |= {"add_mean.weight": torch.eye(3).view(3, 3, 1, 1), "add_mean.bias": 255 * mean}
    return state


def saved(state: dict[str, torch.Tensor]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def tiny(name: str, **arch: Any) -> zoo.Teacher:
    """The real entry `name` with a tiny architecture (same scale, arch, file name, URL, PSNR)."""
    entry = zoo.ZOO[name]
    args = {"scale": entry.scale, "n_feats": 16, "n_resblocks": 2}
    if entry.arch == "rcan":
        args |= {"n_resgroups": 2, "reduction": 4}
    else:
        args["res_scale"] = entry.args["res_scale"]
    return dataclasses.replace(entry, args=args | arch)


def serve(
    monkeypatch: pytest.MonkeyPatch, server: Any, name: str, data: bytes | None = None,
    prefix: str | None = None, **arch: Any,
) -> tuple[zoo.Teacher, bytes]:  # fmt: skip
    """Serve teacher `name` (tiny) from `server`; `data` replaces the checkpoint bytes, `prefix` the
    pinned hash prefix (default: the served file's own)."""
    entry = tiny(name, **arch)
    if data is None:
        data = saved(official_state(entry.arch, **entry.args))
    digest = hashlib.sha256(data).hexdigest()
    entry = dataclasses.replace(entry, sha256_prefix=prefix or digest[:8], sha256=None, size=None)
    monkeypatch.setitem(zoo.ZOO, name, entry)
    server.files[entry.file] = data
    monkeypatch.setenv(zoo.MIRROR_ENV, server.base + "/")
    return entry, data
