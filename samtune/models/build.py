"""Build an official SAM 2.1 model from the installed ``sam2`` package and load weights strictly."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from omegaconf import OmegaConf

from samtune.models.registry import get_model_info, guess_size_from_state_dict
from samtune.models.state_dicts import load_strict, read_state_dict, size_mismatch
from samtune.validation import check_image_size

log = logging.getLogger(__name__)

# The same switches ``sam2.build_sam.build_sam2`` sets with ``apply_postprocessing=True``,
# so that samtune's model behaves exactly like the one application code builds.
POSTPROCESSING_OVERRIDES = {
    "dynamic_multimask_via_stability": True,
    "dynamic_multimask_stability_delta": 0.05,
    "dynamic_multimask_stability_thresh": 0.98,
}


def sam2_config_path(sam2_config: str) -> Path:
    """Absolute path of a config (e.g. ``configs/sam2.1/sam2.1_hiera_t.yaml``) in the installed sam2."""
    import sam2  # noqa: F401  (imported for its location only)

    path = Path(sam2.__path__[0]) / sam2_config
    if not path.is_file():
        raise FileNotFoundError(
            f"sam2 config {sam2_config!r} not found in the installed sam2 package at {path}"
        )
    return path


def build_sam2_model(
    name: str,
    *,
    image_size: int = 1024,
    checkpoint: str | os.PathLike | None = None,
    apply_postprocessing: bool = True,
) -> torch.nn.Module:
    """Build the official ``SAM2Base`` for ``name`` at ``image_size`` and load ``checkpoint``.

    The architecture is read from the installed sam2 package's own YAML with OmegaConf and
    instantiated with Hydra's ``instantiate`` (no Hydra global state is touched).

    Args:
        name: registry name such as ``sam2.1_hiera_tiny``.
        image_size: input resolution; a positive multiple of 32 (SAM 2 itself uses 1024).
        checkpoint: a ``{"model": state_dict}`` file in the official format, or None for random init.
        apply_postprocessing: same meaning as in ``sam2.build_sam.build_sam2``.

    Returns:
        The model in eval mode on the CPU.
    """
    from hydra.utils import instantiate

    info = get_model_info(name)
    image_size = check_image_size("model.image_size", image_size)
    cfg = OmegaConf.load(sam2_config_path(info.sam2_config))
    cfg.model.image_size = int(image_size)
    if apply_postprocessing:
        extra = cfg.model.get("sam_mask_decoder_extra_args") or {}
        cfg.model.sam_mask_decoder_extra_args = {**extra, **POSTPROCESSING_OVERRIDES}
    OmegaConf.resolve(cfg)
    model = instantiate(cfg.model, _recursive_=True)
    if checkpoint is not None:
        load_checkpoint_strict(model, checkpoint, name)
    model.eval()
    return model


def load_checkpoint_strict(model: torch.nn.Module, path: str | os.PathLike, name: str) -> None:
    """Load ``path`` into ``model`` with no missing or unexpected keys.

    Raises:
        CheckpointError: naming both sizes when the file belongs to another model size, or
            listing the offending keys otherwise.
    """
    state_dict = read_state_dict(path)
    found = guess_size_from_state_dict(state_dict)
    if found is not None and found != name:
        raise size_mismatch(path, found, name)
    load_strict(model, state_dict, what=f"checkpoint {path}", target=name)
    log.info("loaded checkpoint %s into %s", path, name)
