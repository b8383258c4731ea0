"""AdamW with separate encoder / decoder learning rates, no decay on norms and biases, warm-up + cosine."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from samtune.validation import ConfigValueError, check_number

RESUME_LENGTH_POLICIES = ("continue", "rescale")


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
        on_resume_length_change: what a resumed run whose length differs from the recorded one
            (a new ``trainer.max_epochs`` / ``max_steps``) does with the schedule: ``continue``
            follows the recorded curve and holds its floor past its end; ``rescale`` rebuilds
            warm-up and cosine over the new length (the learning rate changes at the resumed
            step). Either way a line in the log gives the old and the new length.
    """

    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_fraction: float = 0.05
    min_lr_ratio: float = 0.01
    on_resume_length_change: str = "continue"

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
        if self.on_resume_length_change not in RESUME_LENGTH_POLICIES:
            raise ConfigValueError(
                f"optim.on_resume_length_change must be one of {', '.join(RESUME_LENGTH_POLICIES)}, "
                f"got {self.on_resume_length_change!r}"
            )


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


def warmup_steps_of(total_steps: int, warmup_fraction: float) -> int:
    """Warm-up steps of a schedule over ``total_steps``: ``max(1, round(T * warmup_fraction))``
    with ``T = max(1, total_steps)``, 0 when ``warmup_fraction`` is 0."""
    total_steps = max(1, total_steps)
    return max(1, int(round(total_steps * warmup_fraction))) if warmup_fraction > 0 else 0


def warmup_cosine(
    step: int,
    *,
    total_steps: int,
    warmup_fraction: float = 0.0,
    min_lr_ratio: float,
    warmup_steps: int | None = None,
) -> float:
    """Multiplier of a group's own learning rate at optimiser step ``step`` (counted from 0).

    With ``T = max(1, total_steps)`` and ``W`` warm-up steps (``warmup_steps``, or
    :func:`warmup_steps_of` ``(T, warmup_fraction)``): ``(step + 1) / W`` while ``step < W``, then
    ``r + (1 - r) * (1 + cos(pi * p)) / 2`` with ``r = min_lr_ratio`` and
    ``p = min(1, (step - W) / max(1, T - W))``; past step ``T`` the floor ``r`` holds.
    """
    total_steps = max(1, total_steps)
    warmup = warmup_steps_of(total_steps, warmup_fraction) if warmup_steps is None else warmup_steps
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class ScheduleLength:
    """How long a warm-up + cosine schedule runs, in optimiser steps (recorded in checkpoints)."""

    total_steps: int
    warmup_steps: int

    @classmethod
    def of(cls, total_steps: int, warmup_fraction: float) -> ScheduleLength:
        """The length of a schedule over ``total_steps`` with ``warmup_fraction`` warm-up."""
        total = max(1, int(total_steps))
        return cls(total, warmup_steps_of(total, warmup_fraction))

    @classmethod
    def from_record(cls, record: Any) -> ScheduleLength | None:
        """What :meth:`as_record` wrote (None for a checkpoint written before it was recorded)."""
        if not isinstance(record, dict) or "total_steps" not in record:
            return None
        return cls(int(record["total_steps"]), int(record["warmup_steps"]))

    def as_record(self) -> dict[str, int]:
        """Plain values for ``ckpt["samtune"]["schedule"]``."""
        return {"total_steps": int(self.total_steps), "warmup_steps": int(self.warmup_steps)}


def resumed_schedule(
    recorded: ScheduleLength | None,
    new: ScheduleLength,
    *,
    policy: str,
    step: int,
    min_lr_ratio: float,
) -> tuple[ScheduleLength, str | None]:
    """The schedule a resumed run follows, and the line to log about it (None: nothing changed).

    Args:
        recorded: the length the checkpoint records (None: not recorded).
        new: the length of the resumed run (its ``max_epochs`` / ``max_steps`` today).
        policy: ``continue`` (the recorded curve, then its floor) or ``rescale`` (over ``new``).
        step: the optimiser step the run resumes at.
        min_lr_ratio: the schedule's floor, for the message.
    """
    if recorded is None:
        return new, (
            f"resume: the checkpoint does not record its learning-rate schedule's length; the "
            f"schedule is built over this run's {new.total_steps} optimiser steps "
            f"(warm-up {new.warmup_steps})"
        )
    if recorded.total_steps == new.total_steps:
        return recorded, None

    def factor(length: ScheduleLength) -> float:
        return warmup_cosine(
            step,
            total_steps=length.total_steps,
            warmup_steps=length.warmup_steps,
            min_lr_ratio=min_lr_ratio,
        )

    change = f"resume at step {step}: the run's length changed from {recorded.total_steps} to "
    change += f"{new.total_steps} optimiser steps; "
    if policy == "rescale":
        return new, change + (
            f"optim.on_resume_length_change=rescale rebuilds the schedule over "
            f"{new.total_steps} steps (warm-up {new.warmup_steps}): the learning rate goes from "
            f"{factor(recorded):.4g}x to {factor(new):.4g}x of optim.lr"
        )
    return recorded, change + (
        f"the learning rate continues the recorded schedule ({recorded.total_steps} steps, "
        f"warm-up {recorded.warmup_steps}) and holds its floor ({min_lr_ratio:g}x of optim.lr) "
        f"after step {recorded.total_steps} (optim.on_resume_length_change=rescale rebuilds "
        f"it over {new.total_steps} steps instead)"
    )


def warmup_cosine_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    total_steps: int | None = None,
    warmup_fraction: float = 0.0,
    min_lr_ratio: float,
    length: ScheduleLength | None = None,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step scheduler that multiplies every group's learning rate by :func:`warmup_cosine`.

    Args:
        optimizer: the optimiser; each group keeps its own base learning rate.
        total_steps: all optimiser steps of the run (Lightning's ``estimated_stepping_batches``).
        warmup_fraction: fraction of ``total_steps`` spent in linear warm-up (0: none).
        min_lr_ratio: the cosine ends at ``min_lr_ratio`` times each group's base learning rate.
        length: instead of ``total_steps`` and ``warmup_fraction``: the schedule's length, read at
            every step (so a resumed run can set it once the checkpoint is read).

    Returns:
        A ``LambdaLR``; its ``state_dict`` carries the step, so a resumed run continues the curve.
    """
    if length is None:
        if total_steps is None:
            raise ValueError("warmup_cosine_scheduler needs total_steps or length")
        length = ScheduleLength.of(total_steps, warmup_fraction)
    # Not SequentialLR(LinearLR, CosineAnnealingLR): its eta_min is one absolute lr for all
    # groups, while the floor here is relative to each group's lr (the encoder's is scaled).
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: warmup_cosine(
            step,
            total_steps=length.total_steps,
            warmup_steps=length.warmup_steps,
            min_lr_ratio=min_lr_ratio,
        ),
    )
