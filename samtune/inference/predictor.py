"""Load a tuned model into sam2's own predictors.

``load_predictor`` returns the official ``SAM2ImagePredictor`` (application code keeps calling
``predict(point_coords, point_labels, box, mask_input, multimask_output)``), working at the
model's own ``image_size``; ``load_video_predictor`` returns the official ``SAM2VideoPredictor``.
A model can come from a samtune Lightning checkpoint (``.ckpt``), an exported or official
``{"model": state_dict}`` file (``.pt``), or ``None`` for a :class:`~samtune.models.ModelSpec`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from samtune.models import CheckpointError, ModelSpec, get_model_info
from samtune.models.build import POSTPROCESSING_OVERRIDES, sam2_config_path
from samtune.models.weights import load_model
from samtune.segmenter.sam2 import feature_sizes

log = logging.getLogger(__name__)

VIDEO_PREDICTOR_TARGET = "sam2.sam2_video_predictor.SAM2VideoPredictor"
# What ``sam2.build_sam.build_sam2_video_predictor`` sets on top of the image postprocessing.
VIDEO_POSTPROCESSING_OVERRIDES = {"binarize_mask_from_pts_for_mem_enc": True, "fill_hole_area": 8}


def fit_feature_sizes(predictor: Any) -> Any:
    """Give a ``SAM2ImagePredictor`` the feature sizes of its model's ``image_size``.

    The official class hard-codes the sizes for 1024 px; this derives them from the model.
    Returns the same predictor.
    """
    predictor._bb_feat_sizes = feature_sizes(predictor.model)
    return predictor


def load_predictor(
    path: str | os.PathLike | None,
    *,
    image_size: int | None = None,
    device: str | torch.device = "cpu",
    spec: ModelSpec | None = None,
    **predictor_kwargs: Any,
):
    """The official ``SAM2ImagePredictor`` on a tuned (or zero-shot) model.

    Args:
        path: see :func:`samtune.models.weights.load_model`.
        image_size: build at this resolution instead of the recorded one.
        device: where the model runs.
        spec: see :func:`samtune.models.weights.load_model`.
        **predictor_kwargs: passed to ``SAM2ImagePredictor`` (``mask_threshold``,
            ``max_hole_area``, ``max_sprinkle_area``).

    Returns:
        A ``sam2.sam2_image_predictor.SAM2ImagePredictor`` that works at the model's
        ``image_size`` (its feature sizes are derived from the model).
    """
    # sam2 is imported where it is used: importing it sets up Hydra's global state, which a
    # samtune Hydra app (the CLIs import this module) must not find already initialised
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    model, info = load_model(path, spec, image_size=image_size)
    log.info(
        "loaded %s (%s adapter) at %d px from %s",
        info["name"],
        info["adapter"],
        info["image_size"],
        path,
    )
    return fit_feature_sizes(SAM2ImagePredictor(model.to(device), **predictor_kwargs))


def build_video_model(name: str, *, image_size: int) -> nn.Module:
    """A randomly initialised ``SAM2VideoPredictor`` for ``name``, configured like
    ``sam2.build_sam.build_sam2_video_predictor`` with ``apply_postprocessing=True``, built from
    sam2's YAML without Hydra's global state."""
    cfg = OmegaConf.load(sam2_config_path(get_model_info(name).sam2_config))
    cfg.model._target_ = VIDEO_PREDICTOR_TARGET
    cfg.model.image_size = int(image_size)
    extra = cfg.model.get("sam_mask_decoder_extra_args") or {}
    cfg.model.sam_mask_decoder_extra_args = {**extra, **POSTPROCESSING_OVERRIDES}
    for key, value in VIDEO_POSTPROCESSING_OVERRIDES.items():
        cfg.model[key] = value
    OmegaConf.resolve(cfg)
    return instantiate(cfg.model, _recursive_=True)


def load_video_predictor(
    path: str | os.PathLike | None,
    *,
    image_size: int | None = None,
    device: str | torch.device = "cpu",
    spec: ModelSpec | None = None,
):
    """The official ``SAM2VideoPredictor`` with the weights of ``path`` (see :func:`samtune.models.weights.load_model`).

    Returns:
        A ``sam2.sam2_video_predictor.SAM2VideoPredictor`` in eval mode on ``device``.
    """
    model, info = load_model(path, spec, image_size=image_size)
    video = build_video_model(info["name"], image_size=info["image_size"])
    missing, unexpected = video.load_state_dict(model.state_dict(), strict=False, assign=True)
    if missing or unexpected:
        raise CheckpointError(
            f"the weights of {path} do not fit SAM2VideoPredictor: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    return video.to(device).eval()
