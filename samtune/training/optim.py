"""AdamW with separate encoder / decoder learning rates, no decay on norms and biases, warm-up + cosine."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class OptimConfig:
    """Optimiser and schedule settings (the Hydra ``optim`` group).

    Attributes:
        lr: learning rate of the prompt encoder and mask decoder (and LoRA weights, scaled by the
            adapter's ``encoder_lr_scale``).
        weight_decay: AdamW weight decay, applied to weight matrices only (not norms, biases, embeddings
            of size 1-D).
        betas: AdamW betas.
        warmup_fraction: fraction of all optimiser steps spent in linear warm-up.
        min_lr_ratio: the cosine decays to ``lr * min_lr_ratio``.
    """

    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_fraction: float = 0.05
    min_lr_ratio: float = 0.01


def _no_decay(name: str, param: torch.nn.Parameter) -> bool:
    return (
        param.ndim <= 1 or name.endswith(".bias") or "norm" in name.lower() or "pos_embed" in name
    )


def param_groups(
    model: torch.nn.Module, *, lr: float, encoder_lr_scale: float, weight_decay: float
) -> list[dict]:
    """Split the trainable parameters of a SAM2Base into four AdamW groups.

    Encoder (``image_encoder.*``, LoRA weights included) vs the rest, each with and without weight
    decay. Empty groups are left out. Each group carries a ``name`` for logging.
    """
    groups: dict[str, dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        part = "encoder" if name.startswith("image_encoder.") else "decoder"
        decay = "no_decay" if _no_decay(name, param) else "decay"
        key = f"{part}_{decay}"
        if key not in groups:
            groups[key] = {
                "name": key,
                "params": [],
                "lr": lr * (encoder_lr_scale if part == "encoder" else 1.0),
                "weight_decay": 0.0 if decay == "no_decay" else weight_decay,
            }
        groups[key]["params"].append(param)
    return list(groups.values())


def warmup_cosine(
    step: int, *, total_steps: int, warmup_fraction: float, min_lr_ratio: float
) -> float:
    """Multiplier of the base learning rate at ``step``: linear warm-up, then cosine to ``min_lr_ratio``."""
    total_steps = max(1, total_steps)
    warmup = max(1, int(round(total_steps * warmup_fraction))) if warmup_fraction > 0 else 0
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
