"""The memory check before training: the estimate of :mod:`samtune.training.memory` for a
composed ``train`` config and its built module, against what the device has free.

``speed.fit_memory`` says what happens when a step does not fit: ``check`` stops with the estimate
and the overrides that would fit, ``auto`` applies them, ``off`` skips the check.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from typing import Any

from samtune.segmenter.checkpointing import enable_activation_checkpointing, hiera_blocks
from samtune.training.clip_step import checkpoint_memory_attention
from samtune.training.memory import (
    SAFETY,
    Change,
    MemoryBudgetError,
    StepMemoryInputs,
    available_memory,
    changes_to_fit,
    encoder_units,
    estimate_step_memory,
)

log = logging.getLogger(__name__)

FIT_MODES = ("check", "auto", "off")
ALL_OBJECTS_ASSUMED = 64  # objects per image assumed when prompts.max_objects_per_image is null
# GPU kinds (substrings of torch.cuda.get_device_name) on which the estimate was held against
# measured peaks; on others a step that seems not to fit gives a warning, not a stop
CALIBRATED_GPUS: tuple[str, ...] = ()


def module_inputs(
    module: Any,
    *,
    batch: int,
    objects_per_image: float,
    bf16: bool,
    activation_checkpointing: bool | None = None,
    checkpoint_prompt_steps: bool | None = None,
) -> StepMemoryInputs:
    """The inputs of :func:`estimate_step_memory` for a built ``SamTuneModule``.

    The checkpointing switches default to what the module does (``module.checkpoint_prompt_steps``;
    activation checkpointing when its Hiera blocks are wrapped).
    """
    adapter = module.adapter
    encoder = "frozen" if not adapter.encoder_trainable else adapter.name
    if encoder not in ("lora", "full"):
        encoder = "full"
    if activation_checkpointing is None:
        activation_checkpointing = any(
            "forward" in vars(b) for b in hiera_blocks(module.model)
        )  # enable_activation_checkpointing replaces each block's forward on the instance
    if checkpoint_prompt_steps is None:
        checkpoint_prompt_steps = bool(module.checkpoint_prompt_steps)
    return StepMemoryInputs(
        image_size=int(module.spec.image_size),
        batch=int(batch),
        objects_per_image=objects_per_image,
        prompt_steps=1 + int(getattr(module.prompts, "correction_clicks", 0)),
        encoder=encoder,
        total_params=int(module.param_report["total"]),
        trainable_params=int(module.param_report["trainable"]),
        encoder_units=encoder_units(module.model),
        activation_checkpointing=bool(activation_checkpointing),
        checkpoint_prompt_steps=bool(checkpoint_prompt_steps),
        bf16=bool(bf16),
    )


def is_clip_module(module: Any) -> bool:
    """Whether ``module`` trains on clip steps (a ``VideoModule``: it has a video recipe)."""
    return getattr(module, "recipe", None) is not None


def clip_module_inputs(
    module: Any,
    *,
    batch: int,
    frames: int,
    objects: float,
    bf16: bool,
    activation_checkpointing: bool | None = None,
    memory_checkpointing: bool | None = None,
) -> StepMemoryInputs:
    """The inputs of :func:`estimate_step_memory` for a clip step of a built ``VideoModule``:
    ``batch`` clips of ``frames`` frames and ``objects`` objects each.

    Its decoder passes per object are one per frame plus ``correction_clicks`` on each of the
    recipe's ``num_frames_to_correct`` frames (the most it draws; none when it never prompts with
    clicks); ``training.recipe.checkpoint_correction_steps`` stands in for
    ``checkpoint_prompt_steps``. The checkpointing switches default to what the module does.
    """
    recipe = module.recipe
    frames = int(frames)
    clicks = int(recipe.correction_clicks)
    correction_frames = 0
    if float(recipe.point_prob) > 0 and clicks > 0:
        correction_frames = min(frames, 1 if frames == 1 else int(recipe.num_frames_to_correct))
    base = module_inputs(
        module,
        batch=batch,
        objects_per_image=objects,
        bf16=bf16,
        activation_checkpointing=activation_checkpointing,
        checkpoint_prompt_steps=bool(recipe.checkpoint_correction_steps),
    )
    if memory_checkpointing is None:
        memory_checkpointing = bool(getattr(module, "memory_checkpointing", False))
    return replace(
        base,
        prompt_steps=frames + correction_frames * clicks,
        frames=frames,
        correction_frames=correction_frames,
        memory_checkpointing=bool(memory_checkpointing),
        memory_bank=int(getattr(module.model, "num_maskmem", 7)),
        clip=True,
    )


def step_inputs(cfg: Any, module: Any, precision: str) -> StepMemoryInputs:
    """The memory-relevant settings of a composed ``train`` config and its built module (clip
    steps for a ``VideoModule``: ``data.num_frames``, ``data.max_num_objects``)."""
    speed = cfg.get("speed") or {}
    if is_clip_module(module):
        checkpointing = bool(speed.get("activation_checkpointing", False))
        return clip_module_inputs(
            module,
            batch=int(cfg.data.get("batch_size", 1)),
            frames=int(cfg.data.get("num_frames", 8)),
            objects=int(cfg.data.get("max_num_objects", 3)),
            bf16="bf16" in str(precision),
            activation_checkpointing=checkpointing,
            memory_checkpointing=checkpointing,
        )
    cap = getattr(module.prompts, "max_objects_per_image", None)
    return module_inputs(
        module,
        batch=int(cfg.data.get("batch_size", 1)),
        objects_per_image=int(cap) if cap else ALL_OBJECTS_ASSUMED,
        bf16="bf16" in str(precision),
        activation_checkpointing=bool(speed.get("activation_checkpointing", False)),
        checkpoint_prompt_steps=bool(speed.get("checkpoint_prompt_steps", False)),
    )


def training_device(cfg: Any) -> str:
    """``cuda:<local rank>`` when the trainer will run on a GPU, else ``cpu``.

    Each process of a multi-GPU run checks its own GPU: the local rank comes from ``LOCAL_RANK``
    (torchrun, Lightning's launcher) or ``SLURM_LOCALID``.
    """
    import torch

    accelerator = str(cfg.trainer.get("accelerator", "auto")).lower()
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return f"cuda:{local_rank()}"
    return "cpu"


def local_rank() -> int:
    """This process's rank on its node (0 when no launcher says)."""
    for name in ("LOCAL_RANK", "SLURM_LOCALID"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def calibrated(device: str) -> bool:
    """Whether the step-memory estimate has been checked against measurements on ``device``'s
    kind. The CPU estimate was (``make benchmark``'s memory section); a GPU kind is when
    :data:`CALIBRATED_GPUS` names it."""
    if not device.startswith("cuda"):
        return True
    import torch

    try:
        name = torch.cuda.get_device_name(torch.device(device))
    except Exception:  # no driver: nothing measured there either
        return False
    return any(kind.lower() in name.lower() for kind in CALIBRATED_GPUS)


def _settings(changes: list[Change]) -> str:
    return " ".join(f"{c.key}={str(c.value).lower()}" for c in changes)


def fit_memory(
    cfg: Any, module: Any, precision: str, *, budget: float | None = None
) -> list[Change]:
    """Check that a training step fits the device's free memory before training starts.

    ``speed.fit_memory`` says what happens when it does not: ``check`` (the default) raises
    :class:`MemoryBudgetError` with the estimate and the settings that would fit, ``auto``
    applies those settings to ``cfg`` and ``module`` and logs them, ``off`` skips the check.

    Args:
        cfg: the composed ``train`` config (changed in place by ``auto``).
        module: the built ``SamTuneModule`` (its weights are already in memory).
        precision: the resolved ``trainer.precision``.
        budget: bytes free for the step; by default what :func:`available_memory` reads, less
            a safety margin.

    Returns:
        The applied changes (empty when the step fits or the check is off).
    """
    from omegaconf import open_dict

    speed = cfg.get("speed") or {}
    mode = str(speed.get("fit_memory", "check")).lower()
    if mode not in FIT_MODES:
        raise ValueError(f"speed.fit_memory must be one of {', '.join(FIT_MODES)}, got {mode!r}")
    if mode == "off":
        return []
    device = training_device(cfg)
    inputs = step_inputs(cfg, module, precision)
    estimate = estimate_step_memory(inputs)
    source = "speed.fit_memory_budget_gb"
    if budget is None:
        gb = speed.get("fit_memory_budget_gb")
        if gb is not None:
            budget = float(gb) * 1e9
        else:
            free, source = available_memory(device)
            # on the CPU the weights are already resident; the rest must fit in what is free
            resident = estimate.weights if device == "cpu" else 0.0
            budget = SAFETY * free + resident
    if inputs.is_clip:
        what = (
            f"{module.spec.name} @ {inputs.image_size} px, adapter={module.adapter.name}, clip "
            f"steps of {inputs.batch} clip(s) x {inputs.frames} frames, {inputs.objects_per_image} "
            f"objects x {inputs.prompt_steps} decoder passes per clip ({inputs.correction_frames} "
            f"correction frames), precision {precision}"
        )
    else:
        assumed = (
            ""
            if getattr(module.prompts, "max_objects_per_image", None)
            else f" (prompts.max_objects_per_image=null: {ALL_OBJECTS_ASSUMED} objects per image "
            "assumed)"
        )
        what = (
            f"{module.spec.name} @ {inputs.image_size} px, adapter={module.adapter.name}, batch "
            f"{inputs.batch}, {inputs.objects_per_image} objects x {inputs.prompt_steps} prompt "
            f"steps per image{assumed}, precision {precision}"
        )
    budget_text = f"{budget / 1e9:.1f} GB ({source}" + (
        f", {SAFETY:.0%} of the free memory)" if source != "speed.fit_memory_budget_gb" else ")"
    )
    log.info(
        "memory: one training step needs about %s; %s has %s",
        estimate.describe(),
        device,
        budget_text,
    )
    changes = changes_to_fit(inputs, budget)
    if changes == []:
        return []
    if mode == "check" and not calibrated(device):
        log.warning(
            "memory: a training step of %s may need about %s, more than the %s available on "
            "%s, but the estimate has not been calibrated on this GPU kind, so training goes "
            "on. If it runs out of memory: %s",
            what,
            estimate.describe(),
            budget_text,
            device,
            f"try {_settings(changes)} (speed.fit_memory=auto applies them)"
            if changes
            else "lower model.image_size or use a smaller model",
        )
        return []
    if changes is None:
        raise MemoryBudgetError(
            f"a training step of {what} needs about {estimate.describe()}, more than the "
            f"{budget_text} available on {device}, and no setting of "
            + (
                "training.recipe.checkpoint_correction_steps, speed.activation_checkpointing, "
                "data.max_num_objects or data.batch_size fits: lower model.image_size or "
                "data.num_frames, or use a smaller model."
                if inputs.is_clip
                else "speed.checkpoint_prompt_steps, speed.activation_checkpointing, "
                "prompts.max_objects_per_image or data.batch_size fits: lower "
                "model.image_size or use a smaller model."
            )
            + " speed.fit_memory=off skips this check."
        )
    fitted = estimate_step_memory(changes[-1].inputs)
    if mode == "check":
        raise MemoryBudgetError(
            f"a training step of {what} needs about {estimate.describe()}, more than the "
            f"{budget_text} available on {device}. It would fit (about {fitted.total / 1e9:.1f} "
            f"GB) with: {_settings(changes)}  (add these overrides, or speed.fit_memory=auto to "
            "apply them; speed.fit_memory=off skips this check)"
        )
    with open_dict(cfg):
        for change in changes:
            key = change.key.split(".")
            node = cfg
            for part in key[:-1]:
                node = node[part]
            node[key[-1]] = change.value
    apply_to_module(module, changes)
    log.warning(
        "speed.fit_memory=auto: %s needs about %s, more than the %s available; applied %s "
        "(about %.1f GB)",
        what,
        estimate.describe(),
        budget_text,
        _settings(changes),
        fitted.total / 1e9,
    )
    return changes


def apply_to_module(module: Any, changes: list[Change]) -> None:
    """Apply the module-side changes (checkpointing, objects per image) to a built module."""
    for change in changes:
        if change.key == "speed.checkpoint_prompt_steps":
            module.checkpoint_prompt_steps = True
        elif change.key == "training.recipe.checkpoint_correction_steps":
            module.recipe.checkpoint_correction_steps = True
        elif change.key == "speed.activation_checkpointing":
            if module.adapter.encoder_trainable:
                enable_activation_checkpointing(module.model)
            if is_clip_module(module):
                checkpoint_memory_attention(module.model)
                module.memory_checkpointing = True
        elif change.key == "prompts.max_objects_per_image":
            module.prompts.max_objects_per_image = int(change.value)
