"""AdamW with separate encoder / decoder learning rates, no decay on norms and biases, warm-up + cosine."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from samtune.validation import ConfigValueError, check_number


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

    def __post_init__(self) -> None:
        self.lr = check_number("optim.lr", self.lr, gt=0)
        self.weight_decay = check_number("optim.weight_decay", self.weight_decay, ge=0)
        betas = tuple(self.betas)
        if len(betas) != 2:
            raise ConfigValueError(f"optim.betas must be two numbers, got {list(self.betas)!r}")
        self.betas = tuple(
            check_number(f"optim.betas[{i}]", b, ge=0, lt=1) for i, b in enumerate(betas)
        )
        self.warmup_fraction = check_number(
            "optim.warmup_fraction", self.warmup_fraction, ge=0, le=1
        )
        self.min_lr_ratio = check_number("optim.min_lr_ratio", self.min_lr_ratio, ge=0, le=1)


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
    """Multiplier of a group's own learning rate at optimiser step ``step`` (counted from 0).

    With ``T = max(1, total_steps)`` and ``W = max(1, round(T * warmup_fraction))`` warm-up steps
    (``W = 0`` when ``warmup_fraction`` is 0): ``(step + 1) / W`` while ``step < W``, then
    ``r + (1 - r) * (1 + cos(pi * p)) / 2`` with ``r = min_lr_ratio`` and
    ``p = min(1, (step - W) / max(1, T - W))``.
    """
    total_steps = max(1, total_steps)
    warmup = max(1, int(round(total_steps * warmup_fraction))) if warmup_fraction > 0 else 0
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    total_steps: int,
    warmup_fraction: float,
    min_lr_ratio: float,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step scheduler that multiplies every group's learning rate by :func:`warmup_cosine`.

    Args:
        optimizer: the optimiser; each group keeps its own base learning rate.
        total_steps: all optimiser steps of the run (Lightning's ``estimated_stepping_batches``).
        warmup_fraction: fraction of ``total_steps`` spent in linear warm-up (0: none).
        min_lr_ratio: the cosine ends at ``min_lr_ratio`` times each group's base learning rate.

    Returns:
        A ``LambdaLR``; its ``state_dict`` carries the step, so a resumed run continues the curve.
    """
    # Not SequentialLR(LinearLR, CosineAnnealingLR): its eta_min is one absolute lr for all
    # groups, while the floor here is relative to each group's lr (the encoder's is scaled).
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: warmup_cosine(
            step,
            total_steps=total_steps,
            warmup_fraction=warmup_fraction,
            min_lr_ratio=min_lr_ratio,
        ),
    )
