"""SAM 2's own training code (``training.model.sam2.SAM2Train``, ``training.loss_fns``) as the
reference that the parity tests hold samtune's training steps to."""

from __future__ import annotations

import importlib
import sys
import types

import torch
from omegaconf import OmegaConf

from samtune.models.build import POSTPROCESSING_OVERRIDES, sam2_config_path
from samtune.models.registry import get_model_info

#: SAM 2.1's training loss settings (``sam2.1_hiera_b+_MOSE_finetune.yaml``), samtune's defaults.
SAM2_LOSS_SETTINGS = dict(
    weight_dict={"loss_mask": 20.0, "loss_dice": 1.0, "loss_iou": 1.0, "loss_class": 1.0},
    supervise_all_iou=True,
    iou_use_l1_loss=True,
    pred_obj_scores=True,
    focal_gamma_obj_score=0.0,
    focal_alpha_obj_score=-1.0,
)


def official_training_modules(monkeypatch):
    """``training.model.sam2`` and ``training.loss_fns`` with the two imports they need only
    for names (``tensordict``'s batch class and the trainer's loss key) stubbed."""
    data_utils = types.ModuleType("training.utils.data_utils")
    data_utils.BatchedVideoDatapoint = object
    trainer = types.ModuleType("training.trainer")
    trainer.CORE_LOSS_KEY = "core_loss"
    for name in ("training.utils.data_utils", "training.trainer"):
        if name not in sys.modules:
            monkeypatch.setitem(sys.modules, name, data_utils if "data" in name else trainer)
    return importlib.import_module("training.model.sam2"), importlib.import_module(
        "training.loss_fns"
    )


def build(target: str, size: int, **extra) -> torch.nn.Module:
    """sam2.1_hiera_tiny at ``size`` px as ``target`` (``SAM2Base`` or ``SAM2Train``), from the
    installed config with samtune's post-processing overrides, random weights."""
    from hydra.utils import instantiate

    cfg = OmegaConf.load(sam2_config_path(get_model_info("sam2.1_hiera_tiny").sam2_config))
    cfg.model.image_size = size
    cfg.model.sam_mask_decoder_extra_args = {
        **(cfg.model.get("sam_mask_decoder_extra_args") or {}),
        **POSTPROCESSING_OVERRIDES,
    }
    cfg.model._target_ = target
    for k, v in extra.items():
        cfg.model[k] = v
    OmegaConf.resolve(cfg)
    return instantiate(cfg.model, _recursive_=True)
