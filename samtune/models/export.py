"""Turn a samtune Lightning checkpoint into an official SAM 2 checkpoint.

The result is ``{"model": state_dict}`` with sam2's own key names and any LoRA update merged,
which ``sam2.build_sam.build_sam2(config, path)`` loads strictly with no samtune import, plus a
JSON sidecar ``<name>.json`` saying what the weights are (size, resolution, adapter, data,
metrics, SHA-256 of the ``.pt``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from samtune import __version__
from samtune.models import (
    CheckpointError,
    build_sam2_model,
    get_model_info,
    guess_size_from_state_dict,
)
from samtune.models.adapters import Adapter
from samtune.models.build import log_resolution
from samtune.models.official import sha256_of

log = logging.getLogger(__name__)

MODEL_PREFIX = "model."


def read_lightning_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a samtune Lightning checkpoint and check it has ``state_dict`` and ``samtune`` entries.

    Raises:
        CheckpointError: naming the file and what is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Lightning checkpoint not found: {path}")
    try:
        # Lightning checkpoints hold more than tensors (hyper-parameters, loop state).
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise CheckpointError(f"cannot read Lightning checkpoint {path}: {exc}") from exc
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


def _instantiate_adapter(adapter_cfg: Any, path: Path):
    from hydra.utils import instantiate
    from omegaconf import DictConfig, OmegaConf

    if isinstance(adapter_cfg, DictConfig):
        adapter_cfg = OmegaConf.to_container(adapter_cfg, resolve=True)
    if not isinstance(adapter_cfg, dict) or "_target_" not in adapter_cfg:
        raise CheckpointError(
            f"{path}: ckpt['samtune']['adapter'] must be a Hydra config with _target_, got {adapter_cfg!r}"
        )
    adapter = instantiate(adapter_cfg)
    if not isinstance(adapter, Adapter):
        raise CheckpointError(f"{path}: adapter {adapter_cfg['_target_']} is not a samtune Adapter")
    return adapter


def _load_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], *, what: str) -> None:
    """Load with no missing or unexpected keys, taking over the given tensors (no copy)."""
    try:
        missing, unexpected = model.load_state_dict(state_dict, strict=False, assign=True)
    except RuntimeError as exc:  # shape mismatches
        raise CheckpointError(f"{what} does not fit the model: {exc}") from exc
    if missing or unexpected:
        raise CheckpointError(
            f"{what} does not fit the model: {len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})"
        )


def model_from_lightning_checkpoint(
    path: str | os.PathLike, *, image_size: int | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the tuned model of a samtune Lightning checkpoint as a plain ``SAM2Base``.

    The model is built at the recorded size and resolution with random init, the recorded
    adapter is instantiated and applied, the checkpoint's ``model.*`` weights are loaded
    strictly, and a fresh plain model receives the adapter's merged weights.

    Args:
        path: a ``.ckpt`` written by samtune's LightningModule.
        image_size: build at this resolution instead of the recorded one (weights do not
            depend on it).

    Returns:
        The plain model (eval mode, CPU) and an info dict: ``name``, ``sam2_config``,
        ``image_size``, ``adapter``, ``adapter_config``, ``random_init``, ``checkpoint``,
        ``base_checkpoint``, ``data``, ``metrics``, ``samtune_version``.

    Raises:
        CheckpointError: when the file is not a samtune checkpoint or its weights do not fit.
    """
    path = Path(path)
    ckpt = read_lightning_checkpoint(path)
    meta = ckpt["samtune"]
    name = str(meta["model"]["name"])
    size = int(image_size if image_size is not None else meta["model"]["image_size"])
    log_resolution(path, int(meta["model"]["image_size"]), size)
    # float32 like a freshly built model (a bf16-true run stores bf16 weights)
    state = {
        k[len(MODEL_PREFIX) :]: v.float() if v.is_floating_point() else v
        for k, v in ckpt["state_dict"].items()
        if k.startswith(MODEL_PREFIX)
    }
    if not state:
        raise CheckpointError(f"{path}: the state_dict has no '{MODEL_PREFIX}*' keys")
    found = guess_size_from_state_dict(state)
    if found is not None and found != name:
        raise CheckpointError(
            f"{path}: the weights are a {found} model, but the metadata says {name}"
        )
    adapter = _instantiate_adapter(meta["adapter"], path)
    adapted = adapter.apply(build_sam2_model(name, image_size=size))
    _load_strict(
        adapted, state, what=f"Lightning checkpoint {path} ({adapter.name} adapter on {name})"
    )
    merged = adapter.merged_state_dict(adapted, copy=False)  # the adapted model is dropped next
    del adapted, state
    model = build_sam2_model(name, image_size=size)
    _load_strict(model, merged, what=f"merged weights of {path}")
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
        "data": meta.get("data"),
        "metrics": _jsonable(meta.get("metrics") or {}),
        "samtune_version": meta.get("version"),
    }
    return model, info


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


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it owner-only; give it a normal file's mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
        The path of the written ``.pt``. The sidecar is ``<out without suffix>.json``.
    """

    out = Path(out)
    if out.is_dir():
        out = out / f"{Path(ckpt).stem}.pt"
    if out.suffix not in {".pt", ".pth"}:
        raise ValueError(f"export out={out} must end in .pt (or be an existing folder)")
    model, info = model_from_lightning_checkpoint(ckpt)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    atomic_write(out, lambda tmp: torch.save({"model": state}, tmp))
    sidecar = {
        "model": info["name"],
        "sam2_config": info["sam2_config"],
        "image_size": info["image_size"],
        "adapter": info["adapter"],
        "adapter_config": info["adapter_config"],
        "data": info["data"],
        "metrics": info["metrics"],
        "random_init": info["random_init"],
        "samtune_version": info["samtune_version"],
        "exported_with": __version__,
        "source": str(Path(ckpt).resolve()),
        "base_checkpoint": info["base_checkpoint"],
        "sha256": sha256_of(out),
        "loading": loading_note(out, info["sam2_config"], int(info["image_size"])),
    }
    side = sidecar_path(out)
    atomic_write(side, lambda tmp: tmp.write_text(json.dumps(sidecar, indent=2) + "\n"))
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

    The folder ``out`` receives ``model.pt`` (the same ``{"model": state_dict}`` as
    :func:`export_checkpoint`, with its ``model.json`` sidecar) and ``sam_configuration.json``
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
