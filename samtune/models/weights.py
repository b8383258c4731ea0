"""The one way samtune reads weights: official ``.pt``, exported ``.pt``, training ``.ckpt``.

Opening a file never runs its code:

* every file is read with ``torch.load(weights_only=True)`` through
  :func:`~samtune.models.state_dicts.safe_load`, which refuses a file that holds anything
  beyond tensors and plain containers (see :mod:`samtune.models.state_dicts`);
* the adapter recorded in a training checkpoint is a dict of plain values; it is built only
  when its ``_target_`` names one of samtune's own adapter classes (:data:`ADAPTER_TARGETS`),
  by calling that class directly, never through Hydra's ``instantiate``.

``"none"``, ``"null"``, an empty string and None all mean "no file" (:func:`is_none`).

An exported ``.pt`` is ``{"model": state_dict, "samtune": facts}``: the facts
(:data:`FACT_KEYS`, plain values) say what the weights are, so that the file loads at the
resolution it was tuned at and keeps its random-init flag even when its ``.json`` sidecar was
not copied along. ``sam2.build_sam.build_sam2`` reads only ``["model"]`` and ignores them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from samtune.models.adapters import FrozenEncoder, FullFineTune, LoRAAdapter
from samtune.models.base_ref import base_state_dict
from samtune.models.build import build_sam2_model
from samtune.models.official import sha256_of
from samtune.models.registry import get_model_info, guess_size_from_state_dict
from samtune.models.spec import ModelSpec
from samtune.models.state_dicts import (
    CheckpointError,
    is_none,
    load_strict,
    log_resolution,
    safe_load,
    size_mismatch,
)

log = logging.getLogger(__name__)

MODEL_PREFIX = "model."

FACTS_KEY = "samtune"
"""The key of an exported ``.pt`` that holds its facts, next to ``"model"``."""

FACT_KEYS = ("model", "sam2_config", "image_size", "adapter", "random_init")
"""The facts an exported ``.pt`` and its sidecar both carry, and which must agree."""


# ---------------------------------------------------------------------------------------------
# official and exported files: {"model": state_dict}
# ---------------------------------------------------------------------------------------------


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """The export sidecar of ``path`` (``<stem>.json``), checked against the file's SHA-256."""
    side = path.with_suffix(".json")
    if not side.is_file():
        return None
    try:
        meta = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read the sidecar {side} of {path}: {exc}") from exc
    if not isinstance(meta, dict) or "model" not in meta or "image_size" not in meta:
        log.warning("ignoring %s: not a samtune export sidecar (no 'model' and 'image_size')", side)
        return None
    if meta.get("sha256") and meta["sha256"] != sha256_of(path):
        raise CheckpointError(
            f"{path} does not match its sidecar {side}: the SHA-256 recorded at export differs; "
            "the file changed after export (re-export it, or delete the stale sidecar)"
        )
    return meta


def read_facts(obj: Any, path: Path) -> dict[str, Any] | None:
    """The facts inside an exported ``.pt`` (``obj[FACTS_KEY]``), or None for a file without.

    Raises:
        CheckpointError: the key is there but is not a dict with ``model`` and ``image_size``.
    """
    if not isinstance(obj, dict) or FACTS_KEY not in obj:
        return None
    facts = obj[FACTS_KEY]
    if not isinstance(facts, dict) or "model" not in facts or "image_size" not in facts:
        raise CheckpointError(
            f"{path}: [{FACTS_KEY!r}] is not samtune's export facts (a dict with 'model' and "
            f"'image_size'), got {type(facts).__name__}"
        )
    return facts


def merge_facts(
    facts: dict[str, Any] | None, sidecar: dict[str, Any] | None, path: Path
) -> dict[str, Any] | None:
    """What is known about an exported file: its in-file facts, else its sidecar.

    Raises:
        CheckpointError: both are there and differ in one of :data:`FACT_KEYS` (the sidecar was
            edited, or belongs to another export), naming the file, the sidecar and each value.
    """
    if facts is None or sidecar is None:
        return facts if facts is not None else sidecar
    differ = [
        f"{key}: {facts[key]!r} in the file, {sidecar[key]!r} in the sidecar"
        for key in FACT_KEYS
        if key in facts and key in sidecar and facts[key] != sidecar[key]
    ]
    if differ:
        raise CheckpointError(
            f"{path} and its sidecar {path.with_suffix('.json')} disagree ({'; '.join(differ)}): "
            "the facts inside the file are those written at export; delete or fix the sidecar "
            "(or re-export)"
        )
    return {**sidecar, **facts}


# ---------------------------------------------------------------------------------------------
# training checkpoints (.ckpt)
# ---------------------------------------------------------------------------------------------


def read_training_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a samtune training checkpoint safely and check its ``state_dict`` and ``samtune`` entries.

    Raises:
        CheckpointError: naming the file and what is missing or unsafe.
    """
    path = Path(path)
    ckpt = safe_load(path, what="training checkpoint")
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(
            f"{path} is not a Lightning checkpoint: expected a dict with a 'state_dict'"
        )
    meta = ckpt.get("samtune")
    if (
        not isinstance(meta, dict)
        or not isinstance(meta.get("model"), dict)
        or "adapter" not in meta
    ):
        raise CheckpointError(
            f"{path} has no samtune metadata (ckpt['samtune'] with 'model' and 'adapter'): "
            "was it written by samtune-train?"
        )
    for key in ("name", "image_size"):
        if key not in meta["model"]:
            raise CheckpointError(f"{path}: ckpt['samtune']['model'] lacks {key!r}")
    return ckpt


def _adapter_classes() -> dict[str, type]:
    """samtune's adapter classes by every ``_target_`` spelling samtune has written for them
    (today's module paths and those of checkpoints written before the package layout changed)."""
    old_package = ".".join(("samtune", "adapters"))  # spelled so that path rewrites keep it
    targets: dict[str, type] = {}
    for cls in (FrozenEncoder, FullFineTune, LoRAAdapter):
        file = cls.__module__.rsplit(".", 1)[-1]
        for module in (
            cls.__module__,
            "samtune.models.adapters",
            old_package,
            f"{old_package}.{file}",
        ):
            targets[f"{module}.{cls.__qualname__}"] = cls
    return targets


def adapter_targets() -> frozenset[str]:
    """The ``_target_`` strings an adapter read from a file may name (samtune's own adapters)."""
    return frozenset(_adapter_classes())


_PLAIN = (bool, int, float, str, type(None))


def adapter_from_config(config: Any, source: str | os.PathLike) -> Any:
    """Build the adapter recorded in a file, if its ``_target_`` is one of samtune's adapters.

    Args:
        config: a dict ``{"_target_": ..., **keyword arguments}`` (plain values only).
        source: the file it came from (for error messages).

    Raises:
        CheckpointError: for a target outside :func:`adapter_targets`, or arguments that are not
            plain values.
    """
    from omegaconf import DictConfig, OmegaConf

    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    if not isinstance(config, dict) or "_target_" not in config:
        raise CheckpointError(
            f"{source}: the recorded adapter must be a dict with _target_, got {config!r}"
        )
    classes = _adapter_classes()
    target = config["_target_"]
    if not isinstance(target, str) or target not in classes:
        raise CheckpointError(
            f"{source}: the recorded adapter _target_ {target!r} is not one of samtune's adapters "
            f"({', '.join(sorted({c.__qualname__ for c in classes.values()}))}); refusing to "
            "call it"
        )
    kwargs = {k: v for k, v in config.items() if k != "_target_"}
    for key, value in kwargs.items():
        values = value if isinstance(value, list) else [value]
        if key.startswith("_") or not all(isinstance(v, _PLAIN) for v in values):
            raise CheckpointError(
                f"{source}: adapter argument {key}={value!r} is not a plain value; refusing it"
            )
    try:
        return classes[target](**kwargs)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: cannot build adapter {target}: {exc}") from exc


def checkpoint_model_state(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The SAM 2 weights of a training checkpoint (``model.*`` keys, prefix removed), as float32
    like a freshly built model (a bf16-true run stores bf16 weights)."""
    return {
        k[len(MODEL_PREFIX) :]: v.float() if v.is_floating_point() else v
        for k, v in ckpt["state_dict"].items()
        if k.startswith(MODEL_PREFIX)
    }


def base_record(meta: dict[str, Any]) -> dict[str, Any] | None:
    """What a training checkpoint's run record ``ckpt["samtune"]`` says about its base weights.

    A small checkpoint's ``base``; else, for a run from random weights, their seed and digest
    (``init_seed``, ``init_digest`` of ``model``; a checkpoint written before they were
    recorded has ``seed`` None and no digest); else the base file's path, or None.
    """
    if isinstance(meta.get("base"), dict):
        return dict(meta["base"])
    model = meta["model"]
    if model.get("random_init"):
        seed = model.get("init_seed")
        return {
            "random_init": True,
            "seed": None if seed is None else int(seed),
            **({"digest": str(model["init_digest"])} if model.get("init_digest") else {}),
        }
    if model.get("checkpoint"):
        return {"file": Path(str(model["checkpoint"])).name, "path": str(model["checkpoint"])}
    return None


def model_from_training_checkpoint(
    path: str | os.PathLike, *, image_size: int | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the tuned model of a samtune training checkpoint as a plain ``SAM2Base``.

    The model is built at the recorded size and resolution, the recorded adapter (one of
    samtune's own) is applied, the checkpoint's weights are loaded strictly (a small checkpoint,
    holding only the trained weights, gets the rest from its verified base weights), and a fresh
    plain model receives the adapter's merged weights.

    Args:
        path: a ``.ckpt`` written by samtune's LightningModule.
        image_size: build at this resolution instead of the recorded one.

    Returns:
        The plain model (eval mode, CPU) and an info dict: ``name``, ``sam2_config``,
        ``image_size``, ``adapter``, ``adapter_config``, ``random_init``, ``checkpoint``,
        ``base_checkpoint``, ``base`` (the base-weights record, see :func:`base_record`),
        ``data``, ``metrics``, ``samtune_version``.

    Raises:
        CheckpointError: when the file is not a samtune checkpoint or its weights do not fit.
    """
    path = Path(path)
    ckpt = read_training_checkpoint(path)
    meta = ckpt["samtune"]
    name = str(meta["model"]["name"])
    size = int(image_size if image_size is not None else meta["model"]["image_size"])
    log_resolution(path, int(meta["model"]["image_size"]), size)
    state = checkpoint_model_state(ckpt)
    if not state:
        raise CheckpointError(f"{path}: the state_dict has no '{MODEL_PREFIX}*' keys")
    found = guess_size_from_state_dict(state)
    if found is not None and found != name:
        raise CheckpointError(
            f"{path}: the weights are a {found} model, but the metadata says {name}"
        )
    adapter = adapter_from_config(meta["adapter"], path)
    base = meta.get("base")
    if base:  # a small checkpoint: only the trained weights are inside
        model = build_sam2_model(name, image_size=size)
        load_strict(
            model,
            base_state_dict(base, name, path, image_size=size),
            what=f"base weights of {path}",
            assign=True,
        )
        adapted = adapter.apply(model)
        adapted_state = adapted.state_dict()
        unknown = [k for k in state if k not in adapted_state]
        if unknown:
            raise CheckpointError(
                f"{path}: {len(unknown)} unexpected keys (e.g. {unknown[:3]}) for a "
                f"{adapter.name} adapter on {name}"
            )
        missing = [k for k, p in adapted.named_parameters() if p.requires_grad and k not in state]
        if missing:
            raise CheckpointError(
                f"{path}: {len(missing)} missing keys (e.g. {missing[:3]}): trained weights of "
                f"the {adapter.name} adapter are not in the checkpoint"
            )
        adapted_state.update(state)
        state = adapted_state
    else:
        adapted = adapter.apply(build_sam2_model(name, image_size=size))
    load_strict(
        adapted,
        state,
        what=f"Lightning checkpoint {path} ({adapter.name} adapter on {name})",
        assign=True,
    )
    merged = adapter.merged_state_dict(adapted, copy=False)  # the adapted model is dropped next
    del adapted, state
    model = build_sam2_model(name, image_size=size)
    load_strict(model, merged, what=f"merged weights of {path}", assign=True)
    model.eval()
    info = {
        "name": name,
        "sam2_config": get_model_info(name).sam2_config,
        "image_size": size,
        "adapter": adapter.name,
        "adapter_config": adapter.hydra_config(),
        "random_init": bool(meta["model"].get("random_init", False)),
        "checkpoint": str(path),
        "base_checkpoint": meta["model"].get("checkpoint"),
        "base": base_record(meta),
        "data": meta.get("data"),
        "metrics": meta.get("metrics") or {},
        "samtune_version": meta.get("version"),
    }
    return model, info


# ---------------------------------------------------------------------------------------------
# any source
# ---------------------------------------------------------------------------------------------


def load_model(
    path: str | os.PathLike | None,
    spec: Any = None,
    *,
    image_size: int | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Build a plain ``SAM2Base`` from whatever ``path`` is, loading weights strictly and safely.

    Args:
        path: None or ``"none"`` (build ``spec``, i.e. zero-shot SAM 2.1), a samtune training
            ``.ckpt``, or a ``{"model": state_dict}`` file: exported by samtune, or an official
            checkpoint, whose size is recognised from the weights. An export's facts (size,
            resolution, adapter, random init) come from inside the file (``["samtune"]``),
            else from its ``.json`` sidecar (exports written before the facts were inside);
            when both are there they must agree, or a :class:`CheckpointError` names the
            values that differ. The sidecar's SHA-256 is checked whenever it is there.
        spec: a :class:`~samtune.models.ModelSpec`: the model to build for ``path=None``
            (default ``ModelSpec()``); for a file, its ``name`` must match the file's size, and
            its ``image_size`` is used when the file carries no facts (no ``["samtune"]``, no
            sidecar).
        image_size: build at this resolution instead of the recorded one.

    Returns:
        The model (eval mode, CPU) and info: ``name``, ``sam2_config``, ``image_size``,
        ``adapter`` (None for untuned weights), ``random_init``, ``checkpoint``.

    Raises:
        CheckpointError: for an unreadable or unsafe file, weights that do not fit, or a size
            that differs from ``spec.name`` (naming both sizes).
    """
    if is_none(path):
        spec = spec if spec is not None else ModelSpec()
        if image_size is not None:
            spec = dataclasses.replace(spec, image_size=int(image_size))
        model = spec.build()
        info = {
            "name": spec.name,
            "sam2_config": spec.sam2_config,
            "image_size": int(spec.image_size),
            "adapter": None,
            "random_init": spec.random_init,
            "checkpoint": spec.resolved_checkpoint,
        }
        return model, info
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".ckpt":
        model, full = model_from_training_checkpoint(path, image_size=image_size)
        if spec is not None and spec.name != full["name"]:
            raise size_mismatch(path, full["name"], spec.name)
        keys = ("name", "sam2_config", "image_size", "adapter", "random_init", "checkpoint")
        return model, {k: full[k] for k in keys}
    return _load_state_dict_file(path, spec, image_size)


def _load_state_dict_file(
    path: Path, spec: Any, image_size: int | None
) -> tuple[nn.Module, dict[str, Any]]:
    obj = safe_load(path)
    if not isinstance(obj, dict) or not isinstance(obj.get("model"), dict):
        raise CheckpointError(
            f"checkpoint {path} is not in the SAM 2 format: expected a dict with a 'model' state dict"
        )
    state = obj["model"]
    facts = merge_facts(read_facts(obj, path), read_sidecar(path), path)
    found = guess_size_from_state_dict(state)
    if facts is not None:
        name, recorded_size = str(facts["model"]), int(facts["image_size"])
        if found is not None and found != name:
            raise size_mismatch(path, found, name)
    else:
        if found is None and spec is None:
            raise CheckpointError(f"cannot tell which SAM 2.1 size {path} holds: pass a model spec")
        name = found or spec.name
        recorded_size = int(spec.image_size) if spec is not None else 1024
    if spec is not None and spec.name != name:
        raise size_mismatch(path, name, spec.name)
    size = int(image_size) if image_size is not None else recorded_size
    log_resolution(path, recorded_size, size)
    model = build_sam2_model(name, image_size=size)
    load_strict(model, state, what=f"checkpoint {path}", target=name)
    del obj, state
    model.eval()
    info = {
        "name": name,
        "sam2_config": get_model_info(name).sam2_config,
        "image_size": size,
        "adapter": facts.get("adapter") if facts else None,
        "random_init": bool(facts.get("random_init", False)) if facts else False,
        "checkpoint": str(path),
    }
    return model, info
