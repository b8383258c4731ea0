"""Turn a samtune Lightning checkpoint into an official SAM 2 checkpoint.

The result is ``{"model": state_dict, "samtune": facts}``: the state dict with sam2's own key
names and any LoRA update merged, which ``sam2.build_sam.build_sam2(config, path)`` loads
strictly with no samtune import (it reads only ``["model"]``), and the facts that samtune needs
to load the file as it was tuned (:func:`export_facts`: size, sam2 config, resolution, adapter,
random init, base weights), as plain values. A JSON sidecar ``<name>.json`` repeats the facts and
adds the data, metrics and the SHA-256 of the ``.pt``. The file alone is enough: a ``.pt`` copied
without its sidecar still loads at its tuned resolution and keeps its random-init flag.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch

from samtune import __version__
from samtune.io_atomic import atomic_write, write_json_atomic
from samtune.models.official import sha256_of
from samtune.models.weights import FACTS_KEY, model_from_training_checkpoint

log = logging.getLogger(__name__)

# The export reads training checkpoints through the one safe loader.
model_from_lightning_checkpoint = model_from_training_checkpoint


def _jsonable(value: Any) -> Any:
    """Metrics as plain JSON values (tensors and numpy scalars become floats; NaN becomes None)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def loading_note(out: Path, sam2_config: str, image_size: int) -> str:
    """How to build the exported model at the resolution it was tuned at, for the sidecar."""
    official = f'build_sam2("{sam2_config}", "{out.name}")'
    if image_size == 1024:
        return f"tuned at 1024 px: {official} with SAM2ImagePredictor, as for the official weights"
    return (
        f"tuned at {image_size} px. {official} builds it at 1024 px (SAM2ImagePredictor assumes "
        f'1024); samtune.load_predictor("{out.name}") builds it at {image_size} px, the '
        "resolution it was tuned at, and returns the same SAM2ImagePredictor class"
    )


FACTS_FORMAT = 1


def export_facts(info: dict[str, Any]) -> dict[str, Any]:
    """The facts stored inside an exported ``.pt`` under ``"samtune"``, from the info of
    :func:`~samtune.models.weights.model_from_training_checkpoint` (plain values only, so the
    file still opens with ``torch.load(weights_only=True)``).

    Keys: ``format`` (1), ``model``, ``sam2_config``, ``image_size``, ``adapter``,
    ``adapter_config``, ``random_init``, ``base`` (the base weights: a file's name, path and
    SHA-256 if recorded, or a random init's seed, the digest of the weights drawn from it and
    the torch version that drew them), ``base_checkpoint``, ``samtune_version``,
    ``exported_with``.
    """
    return _jsonable(
        {
            "format": FACTS_FORMAT,
            "model": info["name"],
            "sam2_config": info["sam2_config"],
            "image_size": int(info["image_size"]),
            "adapter": info["adapter"],
            "adapter_config": info["adapter_config"],
            "random_init": bool(info["random_init"]),
            "base": info.get("base"),
            "base_checkpoint": info["base_checkpoint"],
            "samtune_version": info["samtune_version"],
            "exported_with": __version__,
        }
    )


def sidecar_path(out: str | os.PathLike) -> Path:
    """The JSON sidecar of an exported checkpoint: ``<out without suffix>.json``."""
    return Path(out).with_suffix(".json")


def export_checkpoint(ckpt: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the tuned model of ``ckpt`` as an official SAM 2 checkpoint, with a JSON sidecar.

    Args:
        ckpt: a samtune Lightning checkpoint (any adapter; a frozen encoder still writes the
            full model).
        out: the ``.pt`` file to write; an existing folder gets ``<ckpt stem>.pt`` inside.

    Returns:
        The path of the written ``.pt`` (``{"model": ..., "samtune": facts}``, see
        :func:`export_facts`). The sidecar is ``<out without suffix>.json``.
    """

    out = Path(out)
    if out.is_dir():
        out = out / f"{Path(ckpt).stem}.pt"
    if out.suffix not in {".pt", ".pth"}:
        raise ValueError(f"export out={out} must end in .pt (or be an existing folder)")
    model, info = model_from_lightning_checkpoint(ckpt)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    facts = export_facts(info)
    atomic_write(out, lambda tmp: torch.save({"model": state, FACTS_KEY: facts}, tmp))
    sidecar = {
        "model": info["name"],
        "sam2_config": info["sam2_config"],
        "image_size": info["image_size"],
        "adapter": info["adapter"],
        "adapter_config": info["adapter_config"],
        "data": info["data"],
        "metrics": _jsonable(info["metrics"]),
        "random_init": info["random_init"],
        "samtune_version": info["samtune_version"],
        "exported_with": __version__,
        "source": str(Path(ckpt).resolve()),
        "base_checkpoint": info["base_checkpoint"],
        "base": facts["base"],
        "sha256": sha256_of(out),
        "loading": loading_note(out, info["sam2_config"], int(info["image_size"])),
    }
    side = sidecar_path(out)
    write_json_atomic(side, sidecar, indent=2)
    log.info(
        "exported %s (%s, %s adapter) to %s and %s", ckpt, info["name"], info["adapter"], out, side
    )
    if info["random_init"]:
        log.warning(
            "%s was trained from RANDOM WEIGHTS (no SAM 2.1 checkpoint); see %s", ckpt, side
        )
    return out


ROBOFLOW_WEIGHTS = "model.pt"
ROBOFLOW_CONFIG = "sam_configuration.json"


def roboflow_version(sam2_config: str) -> str:
    """Roboflow's name for a SAM 2.1 size: the sam2 config's stem (``sam2.1_hiera_t``, ...)."""
    return Path(sam2_config).stem


def export_roboflow(ckpt: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the tuned model of ``ckpt`` as a model package for Roboflow's local runtime.

    The folder ``out`` receives ``model.pt`` (the same ``{"model": state_dict, "samtune": facts}``
    as :func:`export_checkpoint`, with its ``model.json`` sidecar) and ``sam_configuration.json``
    (``{"version": "sam2.1_hiera_t"}`` style). Roboflow builds the model from sam2's config at
    1024 px; a model tuned at another resolution is exported with a warning.

    Returns:
        The folder.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"export format=roboflow writes a folder, but out={out} is a file")
    weights = export_checkpoint(ckpt, out / ROBOFLOW_WEIGHTS)
    meta = json.loads(sidecar_path(weights).read_text())
    config = {"version": roboflow_version(meta["sam2_config"])}
    atomic_write(
        out / ROBOFLOW_CONFIG, lambda tmp: tmp.write_text(json.dumps(config, indent=2) + "\n")
    )
    if int(meta["image_size"]) != 1024:
        log.warning(
            "%s was tuned at %d px; Roboflow's runtime builds %s at 1024 px "
            "(samtune-serve ckpt=%s serves it at %d px)",
            ckpt,
            int(meta["image_size"]),
            config["version"],
            out,
            int(meta["image_size"]),
        )
    return out
