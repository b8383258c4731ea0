"""Small checkpoints: a reference to the base weights instead of a copy of them.

A training checkpoint of an adapter that leaves most of SAM 2 frozen (``frozen``, ``lora``)
stores only the weights that train, plus ``base``: where the rest comes from, either an
official-format file (its name, path and SHA-256, verified when loading) or a random init
(its seed and the digest of the weights built from it, :func:`state_digest`).
:func:`base_state_dict` rebuilds those weights and checks them against the record: a seed alone
does not pin the weights (another torch version may draw other numbers from the same seed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
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


DIGEST_ALGORITHM = "blake2b-256"


def state_digest(state: Mapping[str, torch.Tensor]) -> str:
    """A digest of a state dict: BLAKE2b-256 over every entry's name, shape, dtype and bytes.

    Entries are taken in sorted name order, so the digest does not depend on the dict's order.

    Returns:
        ``"blake2b-256:<64 hex digits>"``.
    """
    h = hashlib.blake2b(digest_size=32)
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        h.update(f"{name}\0{tuple(t.shape)}\0{t.dtype}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return f"{DIGEST_ALGORITHM}:{h.hexdigest()}"


def random_init_record(seed: int, digest: str | None) -> dict[str, Any]:
    """What samtune records about random base weights: the seed, the digest of the weights
    built from it, and the torch version that built them."""
    record: dict[str, Any] = {"random_init": True, "seed": int(seed)}
    if digest:
        record["digest"] = str(digest)
        record["torch"] = str(torch.__version__).split("+")[0]
    return record


def check_random_init(
    recorded: Mapping[str, Any], digest: str, source: str | os.PathLike, *, what: str
) -> None:
    """Check the digest of rebuilt random weights against the one recorded in ``source``.

    A record written before samtune recorded digests has none: the weights then cannot be
    verified, which is said in the log.

    Raises:
        CheckpointError: naming ``source``, the seed and both digests, when they differ.
    """
    seed = recorded.get("seed")
    if not recorded.get("digest"):
        log.info(
            "%s records its random-init base weights by seed %s only (written before samtune "
            "recorded their digest): the rebuilt weights cannot be verified",
            source,
            seed,
        )
        return
    if recorded["digest"] != digest:
        built = recorded.get("torch", "an unrecorded version")
        raise CheckpointError(
            f"{source}: {what} rebuilt from seed {seed} have digest {digest}, but the run "
            f"trained on weights with digest {recorded['digest']} (built with torch {built}; "
            f"this is torch {torch.__version__}): the same seed drew other weights, so the "
            "trained weights do not fit them. Use the torch version that trained the run"
        )


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
        return random_init_record(
            int(getattr(spec, "init_seed", 0)), getattr(spec, "init_digest", None)
        )
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
            recorded (the base weights changed, so the trained weights no longer fit them), or
            random weights rebuilt from the recorded seed have another digest than the one
            recorded (see :func:`check_random_init`).
    """
    source = Path(source)
    if base.get("random_init"):
        if "seed" not in base:
            raise CheckpointError(f"{source}: base 'random init' without a seed")
        model = build_random_init(name, image_size=image_size, seed=int(base["seed"]))
        state = model.state_dict()
        check_random_init(base, state_digest(state), source, what="the random base weights")
        return state
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
