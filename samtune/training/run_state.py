"""What a training checkpoint holds besides Lightning's own state, and how it comes back.

* ``samtune.rng``: the torch, numpy and Python RNG states (as tensors and plain lists, so the
  file loads with ``weights_only=True``);
* ``samtune.wandb_id``: the W&B run id, so a resumed run logs into the same W&B run;
* small checkpoints: with an adapter that leaves the base weights frozen (``frozen``, ``lora``)
  only the weights that train (and the buffers) are stored, with ``samtune.base`` naming the
  base weights (file name + SHA-256, or "random init" + seed + digest of the weights drawn from
  the seed), verified when loading;
* a run from random weights records their seed and digest in ``samtune.model`` too
  (``init_seed``, ``init_digest``), whatever the adapter, so that an export can name them.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch

from samtune.models.base_ref import base_reference, check_random_init
from samtune.models.state_dicts import CheckpointError

log = logging.getLogger(__name__)

SMALL_ADAPTERS = ("frozen", "lora")


def rng_state() -> dict[str, Any]:
    """The torch, numpy and Python RNG states as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [
            str(kind),
            torch.from_numpy(keys.astype(np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ],
        "python": [int(version), list(internal), gauss],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def frozen_keys(module: torch.nn.Module) -> set[str]:
    """``model.*`` keys of the parameters that do not train (left out of small checkpoints)."""
    return {f"model.{n}" for n, p in module.model.named_parameters() if not p.requires_grad}


def base_of(module: Any) -> dict[str, Any]:
    """The base-weights reference of a module's model (computed once: it may hash a big file)."""
    if getattr(module, "_base_reference", None) is None:
        module._base_reference = base_reference(module.spec)
    return module._base_reference


def save_run_state(module: Any, checkpoint: dict[str, Any]) -> None:
    """Add samtune's state to a checkpoint being saved; make it small if the adapter allows."""
    meta = checkpoint["samtune"]
    meta["rng"] = rng_state()
    spec = getattr(module, "spec", None)
    if spec is not None and spec.random_init and isinstance(meta.get("model"), dict):
        meta["model"]["init_seed"] = int(spec.init_seed)
        if spec.init_digest:
            meta["model"]["init_digest"] = str(spec.init_digest)
    for lg in getattr(module, "loggers", None) or []:
        if type(lg).__name__ == "WandbLogger":
            meta["wandb_id"] = str(lg.version)
        if type(lg).__name__ == "CSVLogger":
            # the metrics file on disk then holds every row up to this checkpoint, so a run
            # resumed from it continues the file without a gap
            lg.save()
    if module.adapter.name in SMALL_ADAPTERS:
        drop = frozen_keys(module)
        state = checkpoint["state_dict"]
        for key in drop:
            state.pop(key, None)
        meta["base"] = base_of(module)


def load_run_state(module: Any, checkpoint: dict[str, Any]) -> None:
    """Restore samtune's state from a checkpoint before Lightning loads its ``state_dict``.

    Raises:
        CheckpointError: a small checkpoint whose base weights differ from this run's.
    """
    meta = checkpoint.get("samtune") or {}
    if meta.get("metrics"):
        module.best_metrics = {k: float(v) for k, v in meta["metrics"].items()}
    if meta.get("rng"):
        set_rng_state(meta["rng"])
    base = meta.get("base")
    if base:
        mine = base_of(module)
        source = getattr(getattr(module, "_trainer", None), "ckpt_path", None) or "the checkpoint"
        same = (
            base.get("sha256") == mine.get("sha256")
            if "sha256" in base
            else base.get("seed") == mine.get("seed") and mine.get("random_init")
        )
        if not same:
            raise CheckpointError(
                f"{source} was trained on base weights {base}, but this run's are {mine}"
            )
        if base.get("random_init") and mine.get("digest"):
            check_random_init(base, mine["digest"], source, what="this run's random base weights")
        state = checkpoint["state_dict"]
        own = module.state_dict()
        for key in frozen_keys(module):
            state.setdefault(key, own[key])
