"""Reductions across DDP ranks that keep a run's numbers independent of how many ranks it uses.

SAM 2's loss is a mean over the prompted objects of a batch, and images hold different numbers
of objects. DDP averages gradients over ranks, so ranks that back-propagate their own object
means would weigh an object on a rank with few objects more than one on a busy rank. Here each
rank scales its loss by ``world_size * n_local / n_total``: the averaged gradient is then
exactly the gradient of the mean over all objects of all ranks, as one process with the whole
batch would compute it. (Validation means over all ranks' objects are torchmetrics' job.)
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
from omegaconf import DictConfig, open_dict

ReduceSum = Callable[[torch.Tensor], torch.Tensor]


def mean_over_objects(
    terms: Mapping[str, torch.Tensor],
    n_objects: int,
    *,
    reduce_sum: ReduceSum,
    world_size: int,
    names: tuple[str, ...],
    device: torch.device | None = None,
) -> tuple[torch.Tensor | None, dict[str, torch.Tensor], int]:
    """This rank's loss to back-propagate, and the loss terms over the objects of all ranks.

    One ``reduce_sum`` call (an all-reduce) per step, made by every rank, also by one without
    objects (``terms`` empty).

    Args:
        terms: this rank's loss terms (``"loss"`` among them), each a mean over its objects;
            empty when this rank has no object in its batch.
        n_objects: number of objects behind ``terms`` on this rank.
        reduce_sum: sums a tensor over all ranks (the identity in a single process).
        world_size: number of ranks whose gradients DDP averages.
        names: the terms to return, in a fixed order (the same on every rank).
        device: where the all-reduce happens (the rank's GPU with NCCL).

    Returns:
        ``(loss, means, total)``: ``loss`` to back-propagate on this rank (None when it has no
        object), ``means`` every name's mean over all objects of all ranks (detached; empty
        when there is no object anywhere) and ``total`` the number of those objects.
    """
    if "loss" not in names:
        raise ValueError(f"mean_over_objects: names must include 'loss', got {names!r}")
    local = [float(n_objects)]
    for name in names:
        value = terms.get(name) if n_objects else None
        local.append(float(value.detach()) * n_objects if value is not None else 0.0)
    summed = reduce_sum(torch.tensor(local, dtype=torch.float64, device=device)).cpu()
    total = int(round(float(summed[0])))
    if total == 0:
        return None, {}, 0
    means = {name: summed[i + 1] / total for i, name in enumerate(names)}
    if not n_objects:
        return None, means, total
    scale = world_size * n_objects / total
    loss = terms["loss"] if scale == 1.0 else terms["loss"] * scale
    return loss, means, total


def resolve_find_unused(trainer_cfg: DictConfig, *, correction_clicks: int) -> DictConfig:
    """The trainer config with a DDP strategy's ``find_unused_parameters: null`` decided.

    DDP's default (False) fails at the second step when a trainable weight received no gradient
    in the first. With at least one correction click every trainable weight of samtune's
    adapters takes part in every step; with ``correction_clicks: 0`` no mask prompt is ever
    fed back, so the prompt encoder's mask branch (``mask_downscaling``) sits out and DDP must
    look for unused weights (one extra pass over the autograd graph per step).

    Args:
        trainer_cfg: the ``trainer`` config group (not modified).
        correction_clicks: the prompt simulator's correction clicks per object.

    Returns:
        ``trainer_cfg`` itself when there is nothing to decide, else a copy with the value set.
    """
    strategy = trainer_cfg.get("strategy")
    if not isinstance(strategy, DictConfig) or "find_unused_parameters" not in strategy:
        return trainer_cfg
    if strategy.find_unused_parameters is not None:
        return trainer_cfg
    resolved = copy.deepcopy(trainer_cfg)
    with open_dict(resolved):
        resolved.strategy.find_unused_parameters = int(correction_clicks) == 0
    return resolved


def check_launch(trainer: Any) -> None:
    """Refuse DDP processes that Lightning would start itself inside a Hydra sweep (``-m``).

    Lightning starts the other ranks by running the same command line again, which inside a
    sweep would start the whole sweep again in every rank. Under SLURM (``hydra/launcher=slurm``)
    the ranks are SLURM's tasks and nothing is re-run, so that is allowed.

    Raises:
        ValueError: naming the way out, when the trainer would launch ranks in a sweep.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    strategy = trainer.strategy
    launcher = getattr(strategy, "launcher", None)
    environment = getattr(strategy, "cluster_environment", None)
    if launcher is None or trainer.world_size <= 1:
        return
    if environment is not None and environment.creates_processes_externally:
        return
    raise ValueError(
        f"trainer=ddp with {trainer.world_size} processes inside a sweep (-m): Lightning would "
        "start each rank by re-running this command, sweep included. Run the sweep's points one "
        "by one, or submit the sweep with hydra/launcher=slurm, where every SLURM task is a rank"
    )


RANK_VARIABLES = ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK")


def launched_as_rank_zero() -> bool:
    """Whether this process is rank 0 of its run, from what its launcher set before any Trainer
    exists (Lightning's DDP launcher, SLURM's srun); a plain process is rank 0."""
    return all(os.environ.get(name, "0") in ("", "0") for name in RANK_VARIABLES)
