"""Small checkpoints: a reference to the base weights instead of a copy of them.

A training checkpoint of an adapter that leaves most of SAM 2 frozen (``frozen``, ``lora``)
stores only the weights that train, plus ``base``: where the rest comes from, either an
official-format file (its name, path and SHA-256, verified when loading) or a random init
(its seed). :func:`base_state_dict` rebuilds those weights.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from samtune.models.build import build_sam2_model
from samtune.models.official import default_cache_dir, hash_record_path, sha256_of
from samtune.models.state_dicts import CheckpointError, read_state_dict

log = logging.getLogger(__name__)


def build_random_init(name: str, *, image_size: int, seed: int) -> torch.nn.Module:
    """``build_sam2_model(name)`` with random weights drawn from ``seed`` (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return build_sam2_model(name, image_size=image_size)


def file_sha256(path: Path) -> str:
    """The SHA-256 of ``path``: the one recorded at download time if there is one (it was
    verified when the file was resolved), else computed now."""
    record = hash_record_path(path)
    if record.is_file():
        try:
            return str(json.loads(record.read_text())["sha256"])
        except (OSError, ValueError, KeyError):
            pass
    return sha256_of(path)


def base_reference(spec: Any) -> dict[str, Any]:
    """What a small checkpoint records about the base weights of ``spec`` (a resolved ModelSpec)."""
    if spec.random_init or not spec.resolved_checkpoint:
        return {"random_init": True, "seed": int(getattr(spec, "init_seed", 0))}
    path = Path(spec.resolved_checkpoint).resolve()
    return {"file": path.name, "path": str(path), "sha256": file_sha256(path)}


def _candidates(base: dict[str, Any], source: Path) -> list[Path]:
    file = str(base.get("file", ""))
    found = [Path(base["path"])] if base.get("path") else []
    if file:
        for folder in (default_cache_dir(), source.parent, source.parent.parent):
            found.append(folder / file)
    return found


def base_state_dict(
    base: dict[str, Any], name: str, source: str | os.PathLike, *, image_size: int
) -> dict:
    """The base weights a small checkpoint ``source`` refers to, verified.

    Raises:
        CheckpointError: the file is nowhere to be found, or its SHA-256 differs from the one
            recorded (the base weights changed, so the trained weights no longer fit them).
    """
    source = Path(source)
    if base.get("random_init"):
        if "seed" not in base:
            raise CheckpointError(f"{source}: base 'random init' without a seed")
        model = build_random_init(name, image_size=image_size, seed=int(base["seed"]))
        return model.state_dict()
    if not base.get("sha256") or not base.get("file"):
        raise CheckpointError(f"{source}: the base reference {base} lacks 'file' or 'sha256'")
    tried = []
    for path in _candidates(base, source):
        if path in tried:
            continue
        tried.append(path)
        if not path.is_file():
            continue
        digest = sha256_of(path)
        if digest != base["sha256"]:
            raise CheckpointError(
                f"{source} was trained on base weights {base['file']} with SHA-256 "
                f"{base['sha256']}, but {path} has SHA-256 {digest}: not the same weights"
            )
        return read_state_dict(path)
    raise CheckpointError(
        f"{source} holds only the trained weights; its base weights {base['file']} "
        f"(SHA-256 {base['sha256']}) are not at any of: {', '.join(map(str, tried))}. Put the "
        "file in one of these places (or export the run where the file is)"
    )
