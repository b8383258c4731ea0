"""Peak memory of one training step, estimated before training, and settings that fit the device.

The estimate is a model of what a step holds at its peak (the start of the backward pass),
with coefficients fitted to peaks measured by ``scripts/bench`` (``--sections train``; the
runs are in ``docs/benchmarks/``):

- weights (4 bytes per parameter) and, per trainable parameter, its gradient and AdamW's two
  moments (12 bytes);
- the image encoder's saved activations: per image and input pixel, ``encoder_units`` (floats that
  the Hiera blocks output per input pixel, from the architecture) times a coefficient of the
  adapter (frozen: no graph through the encoder; LoRA; full) and of activation checkpointing;
- the mask decoder and loss: per prompted object and input pixel, one share per prompt step (each
  decoder pass keeps its activations and full-resolution logits for the loss) and one share per
  object (recomputation of one step with ``speed.checkpoint_prompt_steps``, the masks);
- a fixed share (allocator, kernels' workspaces).

A clip step (``training=video``, :mod:`samtune.training.clip_step`) is the same model over the
``frames`` of each clip: the encoder term counts every frame as an image, the decoder term every
decoder pass of an object (one per frame, plus ``correction_clicks`` on each correction frame), and
a memory term adds, per object and frame, what the memory path keeps for the backward pass (the
object's copy of the frame features, the memory attention over the memory bank and the object
pointers, the memory encoder of the predicted mask); ``speed.activation_checkpointing`` also
recomputes the memory attention there. Its coefficients were fitted to clip-step peaks measured
by ``scripts/bench`` (``--sections clips``).

Every term grows with ``image_size**2``. :mod:`samtune.training.memory_check` applies it to a
training run before it starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

# Fitted (non-negative least squares on the relative error) to 29 peaks measured by
# scripts/bench's train section on the CPU in fp32 (peak RSS minus RSS before building the
# model): sam2.1_hiera_tiny and _small, 256, 512 and 1024 px, batch 2-4, 8-64 objects x 3-8 prompt
# steps, every adapter and checkpointing configuration (docs/benchmarks/); every fitted peak is
# within 20% (docs/performance.md).
# Bytes per (image x input pixel x encoder unit) of the encoder's saved activations, per adapter
# kind; "checkpointed": LoRA or full with speed.activation_checkpointing=true.
ENCODER_BYTES = {"frozen": 0.0, "lora": 74.96, "full": 79.71, "checkpointed": 13.05}
# Bytes per (prompted object x input pixel): per prompt step, and once per object.
DECODER_BYTES = {
    "per_step": 183.9,
    "per_object": 0.0,
    "per_step_checkpointed": 58.33,
    "per_object_checkpointed": 116.5,
}
FIXED_BYTES = 573.5e6
# A clip step's memory path, bytes per object and input pixel: per frame, and per memory frame
# attended (frame t attends to min(t, memory bank) earlier frames), without and with the memory
# attention checkpointed (speed.activation_checkpointing with training=video). Fitted to the
# clip-step peaks measured by scripts/bench's clips section on this CPU in fp32
# (docs/benchmarks/cpu-256px-clips-memory.json).
MEMORY_BYTES = {
    "per_frame": 389.4,
    "per_memory": 107.2,
    "per_frame_checkpointed": 0.0,
    "per_memory_checkpointed": 110.6,
}
# Under bf16 autocast on this CPU (512 px, batch 2) the peaks were 13% lower (LoRA) and equal
# (LoRA + both checkpointings) to fp32: estimated like fp32.
BF16_ACTIVATION_FACTOR = 1.0
SAFETY = 0.9  # use at most this fraction of the memory the device has free


@dataclass(frozen=True)
class StepMemoryInputs:
    """What decides a training step's memory.

    Attributes:
        image_size: ``model.image_size`` (square inputs).
        batch: images per step (``data.batch_size``).
        objects_per_image: objects prompted per image (``prompts.max_objects_per_image``; a
            mean where it is known, as in the benchmark).
        prompt_steps: decoder passes per object (1 + ``prompts.correction_clicks``).
        encoder: ``frozen`` (no gradient through the encoder), ``lora`` or ``full``.
        total_params: all parameters of the model.
        trainable_params: parameters that train.
        encoder_units: floats the Hiera blocks output per input pixel (:func:`encoder_units`).
        activation_checkpointing: ``speed.activation_checkpointing`` (applies to lora and full).
        checkpoint_prompt_steps: ``speed.checkpoint_prompt_steps``.
        bf16: bf16 autocast (``trainer.precision`` bf16-mixed).
        frames: frames per clip of a clip step (``training=video``); 1 for an image step.
            With ``frames > 1`` (or ``clip``), ``batch`` counts clips, ``objects_per_image`` the
            objects of a clip and ``prompt_steps`` an object's decoder passes over the whole
            clip (``frames + correction_frames * correction_clicks``).
        correction_frames: frames of a clip that get correction clicks.
        memory_checkpointing: the memory attention recomputed in the backward pass.
        memory_bank: frames the memory bank holds (``model.num_maskmem``).
        clip: a clip step (also with one frame).
    """

    image_size: int
    batch: int
    objects_per_image: float
    prompt_steps: int
    encoder: str
    total_params: int
    trainable_params: int
    encoder_units: float
    activation_checkpointing: bool = False
    checkpoint_prompt_steps: bool = False
    bf16: bool = False
    frames: int = 1
    correction_frames: int = 0
    memory_checkpointing: bool = False
    memory_bank: int = 7
    clip: bool = False

    @property
    def memories_attended(self) -> int:
        """Memory frames the clip's frames attend to, summed over the frames."""
        return sum(min(t, int(self.memory_bank)) for t in range(int(self.frames)))

    @property
    def is_clip(self) -> bool:
        """A clip step (its memory path counted)."""
        return self.clip or self.frames > 1

    def __post_init__(self) -> None:
        if int(self.correction_frames) < 0 or int(self.correction_frames) > int(self.frames):
            raise ValueError(
                f"correction_frames must be in [0, frames={self.frames}], got "
                f"{self.correction_frames!r}"
            )
        for key in ("image_size", "batch", "prompt_steps", "frames"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"{key} must be a positive integer, got {getattr(self, key)!r}")
        if not self.objects_per_image > 0:
            raise ValueError(f"objects_per_image must be positive, got {self.objects_per_image!r}")
        if self.encoder not in ("frozen", "lora", "full"):
            raise ValueError(f"encoder must be frozen, lora or full, got {self.encoder!r}")


@dataclass(frozen=True)
class MemoryEstimate:
    """The estimated peak of one training step, in bytes, by part."""

    weights: float
    optimizer: float
    encoder: float
    decoder: float
    fixed: float
    memory: float = 0.0

    @property
    def total(self) -> float:
        """All parts together."""
        return (
            self.weights + self.optimizer + self.encoder + self.decoder + self.memory + self.fixed
        )

    def describe(self) -> str:
        """``7.9 GB (weights 0.2, gradients+AdamW 0.1, encoder 2.1, decoder+loss 4.9, other 0.6)``
        (a clip step adds ``memory path``)."""
        gb = 1e9
        memory = f", memory path {self.memory / gb:.1f}" if self.memory else ""
        return (
            f"{self.total / gb:.1f} GB (weights {self.weights / gb:.1f}, gradients+AdamW "
            f"{self.optimizer / gb:.1f}, encoder activations {self.encoder / gb:.1f}, decoder+loss "
            f"{self.decoder / gb:.1f}{memory}, other {self.fixed / gb:.1f})"
        )


def encoder_units(model: Any) -> float:
    """Floats the Hiera trunk's blocks output per input pixel, summed over the blocks.

    The trunk starts at stride 4 (1/16 token per pixel); every block with a query stride pools
    by 2 on each side. ``model`` is a ``SAM2Base`` (or anything with ``image_encoder.trunk``).
    """
    trunk = model.image_encoder.trunk
    tokens_per_pixel = 1.0 / 16.0
    units = 0.0
    for block in trunk.blocks:
        if getattr(block, "q_stride", None):
            tokens_per_pixel /= 4.0
        units += int(block.dim_out) * tokens_per_pixel
    return units


def estimate_step_memory(inputs: StepMemoryInputs) -> MemoryEstimate:
    """The peak memory of one training step for ``inputs`` (see the module docstring)."""
    pixels = float(inputs.image_size) ** 2
    act = BF16_ACTIVATION_FACTOR if inputs.bf16 else 1.0
    kind = inputs.encoder
    if kind != "frozen" and inputs.activation_checkpointing:
        kind = "checkpointed"
    images = inputs.batch * inputs.frames
    encoder = images * pixels * inputs.encoder_units * ENCODER_BYTES[kind] * act
    objects = inputs.batch * inputs.objects_per_image
    memory = 0.0
    if inputs.is_clip:
        # one decoder pass per frame; the correction steps, checkpointed with
        # training.recipe.checkpoint_correction_steps (given as checkpoint_prompt_steps)
        corrections = max(0, inputs.prompt_steps - inputs.frames)
        if inputs.checkpoint_prompt_steps:
            per_object = (
                inputs.frames * DECODER_BYTES["per_step"]
                + corrections * DECODER_BYTES["per_step_checkpointed"]
                + inputs.correction_frames * DECODER_BYTES["per_object_checkpointed"]
            )
        else:
            per_object = inputs.prompt_steps * DECODER_BYTES["per_step"]
        suffix = "_checkpointed" if inputs.memory_checkpointing else ""
        memory = (
            objects
            * pixels
            * act
            * (
                inputs.frames * MEMORY_BYTES["per_frame" + suffix]
                + inputs.memories_attended * MEMORY_BYTES["per_memory" + suffix]
            )
        )
    else:
        suffix = "_checkpointed" if inputs.checkpoint_prompt_steps else ""
        per_object = (
            inputs.prompt_steps * DECODER_BYTES["per_step" + suffix]
            + DECODER_BYTES["per_object" + suffix]
        )
    decoder = objects * pixels * per_object * act
    return MemoryEstimate(
        weights=4.0 * inputs.total_params,
        optimizer=12.0 * inputs.trainable_params,
        encoder=encoder,
        decoder=decoder,
        fixed=FIXED_BYTES,
        memory=memory,
    )


# ------------------------------------------------------------------------------- the device
def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_memory(device: str = "cpu") -> tuple[float, str]:
    """Bytes free for a training step on ``device``, and where the number comes from.

    CPU: ``MemAvailable`` of ``/proc/meminfo``, lowered to the cgroup's limit minus its usage
    when the process runs in a memory-limited cgroup (containers, SLURM). GPU:
    ``torch.cuda.mem_get_info``. ``inf`` when nothing can be read.
    """
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return float(free), f"free memory of {torch.cuda.get_device_name(torch.device(device))}"
    available, source = math.inf, "unknown (no /proc/meminfo)"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available, source = 1024.0 * int(line.split()[1]), "MemAvailable in /proc/meminfo"
    except OSError:
        pass
    limit = _read_int("/sys/fs/cgroup/memory.max")
    usage = _read_int("/sys/fs/cgroup/memory.current")
    if limit is not None and usage is not None and limit - usage < available:
        available, source = float(limit - usage), "the cgroup's memory.max minus memory.current"
    return available, source


# ------------------------------------------------------------------------------- fitting
@dataclass(frozen=True)
class Change:
    """One setting changed to fit: the config key, its value, and the inputs it gives."""

    key: str
    value: Any
    inputs: StepMemoryInputs


def changes_to_fit(inputs: StepMemoryInputs, budget: float) -> list[Change] | None:
    """The settings to change, in order, until the estimate fits ``budget`` bytes.

    First the switches that leave the gradients unchanged and only cost time
    (``speed.checkpoint_prompt_steps``, ``speed.activation_checkpointing``), then fewer prompted
    objects per image (down to 4), a smaller batch (down to 1), and fewer objects (down to 1).
    For a clip step the switches are ``training.recipe.checkpoint_correction_steps`` (when frames
    get corrections) and ``speed.activation_checkpointing`` (which also checkpoints the memory
    attention), and the objects ``data.max_num_objects`` (objects per clip).
    Returns [] when it fits as it is, None when even the smallest settings do not fit.
    """
    changes: list[Change] = []
    current = inputs

    def fits(x: StepMemoryInputs) -> bool:
        return estimate_step_memory(x).total <= budget

    def add(key: str, value: Any, new: StepMemoryInputs) -> None:
        nonlocal current
        changes[:] = [c for c in changes if c.key != key]
        changes.append(Change(key, value, new))
        current = new

    if fits(current):
        return []
    clip = current.is_clip
    prompt_key = (
        "training.recipe.checkpoint_correction_steps" if clip else "speed.checkpoint_prompt_steps"
    )
    if not current.checkpoint_prompt_steps and (not clip or current.correction_frames > 0):
        add(prompt_key, True, replace(current, checkpoint_prompt_steps=True))
        if fits(current):
            return changes
    encoder_ckpt = current.encoder != "frozen" and not current.activation_checkpointing
    if encoder_ckpt or (clip and not current.memory_checkpointing):
        new = replace(current, activation_checkpointing=True, memory_checkpointing=clip)
        add("speed.activation_checkpointing", True, new)
        if fits(current):
            return changes
    objects_key = "data.max_num_objects" if clip else "prompts.max_objects_per_image"
    for floor in (4, 1):
        while current.objects_per_image > floor and not fits(current):
            n = max(floor, current.objects_per_image // 2)
            add(objects_key, n, replace(current, objects_per_image=n))
        if fits(current):
            return changes
        while floor == 4 and current.batch > 1 and not fits(current):
            b = max(1, current.batch // 2)
            add("data.batch_size", b, replace(current, batch=b))
        if fits(current):
            return changes
    return None


class MemoryBudgetError(RuntimeError):
    """A training step is estimated not to fit the device's free memory."""
