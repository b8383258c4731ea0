"""Activation checkpointing of the Hiera blocks of a SAM 2 image encoder, and of prompt steps.

sam2's Hiera has no checkpointing of its own. :func:`enable_activation_checkpointing` replaces
each block's ``forward`` on the instance (the class and the state-dict keys stay as they are, so
strict loading, LoRA merging and export are unaffected) with one that runs the block under
``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)`` whenever a gradient will flow
through it: the block's activations are dropped after the forward pass and recomputed in the
backward pass. Gradients are the same as without checkpointing; the price is one extra forward
pass of the encoder per training step.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

_MARK = "_samtune_activation_checkpointing"


def hiera_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The Hiera blocks (``MultiScaleBlock``) inside ``model``, in order.

    Works on a ``SAM2Base``, its ``image_encoder`` or trunk, and on models wrapped by peft.
    """
    from sam2.modeling.backbones.hieradet import MultiScaleBlock

    return [m for m in model.modules() if isinstance(m, MultiScaleBlock)]


def _needs_grad(block: torch.nn.Module, x: torch.Tensor) -> bool:
    if not torch.is_grad_enabled():
        return False
    return x.requires_grad or any(p.requires_grad for p in block.parameters())


def _checkpointed_forward(self: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    forward = type(self).forward.__get__(self)
    if _needs_grad(self, x):
        return checkpoint(forward, x, use_reentrant=False)
    return forward(x)


def enable_activation_checkpointing(model: torch.nn.Module) -> int:
    """Checkpoint every Hiera block of ``model``; calling it again changes nothing.

    Blocks only checkpoint while gradients are enabled and either their input or one of their
    parameters requires a gradient, so evaluation and a frozen encoder run as before.

    Args:
        model: a SAM 2 model (or a part of one) containing Hiera blocks.

    Returns:
        The number of blocks that checkpoint.

    Raises:
        ValueError: when ``model`` has no Hiera blocks.
    """
    blocks = hiera_blocks(model)
    if not blocks:
        raise ValueError(
            f"activation checkpointing needs Hiera blocks (sam2 MultiScaleBlock), but "
            f"{type(model).__name__} has none; pass the SAM 2 model or its image encoder"
        )
    for block in blocks:
        if not getattr(block, _MARK, False):
            block.forward = types.MethodType(_checkpointed_forward, block)
            setattr(block, _MARK, True)
    return len(blocks)


def disable_activation_checkpointing(model: torch.nn.Module) -> int:
    """Undo :func:`enable_activation_checkpointing`; returns how many blocks were restored."""
    restored = 0
    for block in hiera_blocks(model):
        if getattr(block, _MARK, False):
            del block.forward
            delattr(block, _MARK)
            restored += 1
    return restored


def is_activation_checkpointing(model: torch.nn.Module) -> bool:
    """Whether every Hiera block of ``model`` checkpoints (False when it has none)."""
    blocks = hiera_blocks(model)
    return bool(blocks) and all(getattr(b, _MARK, False) for b in blocks)


def run_checkpointed(fn: Callable[..., Any], *args: Any, enabled: bool) -> Any:
    """``fn(*args)``, under non-reentrant activation checkpointing when ``enabled`` and gradients
    are on: only the inputs are kept and ``fn`` runs again in the backward pass.

    The training loop uses it for each interactive prompt step (decoder + loss), whose activations
    for many objects and several steps can outweigh the image encoder's.
    """
    if enabled and torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)
