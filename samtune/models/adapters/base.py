"""``Adapter``: which parameters of a SAM 2 model train, and how to get plain SAM 2 weights back.

The single-image path (image encoder, prompt encoder, mask decoder) trains as each adapter says;
the video-only modules (memory attention, memory encoder, object pointers, mask downsampling and
the ``no_mem`` / ``no_obj`` / ``maskmem`` embeddings) stay frozen unless ``memory=True`` (the
memory path, trained on clips with ``training=video``).
"""

from __future__ import annotations

import sys
from copy import deepcopy
from typing import Any

import torch
from torch import nn

from samtune.validation import check_number

# Top-level submodules of ``SAM2Base`` that the single-image path uses, and samtune's name for each.
PARTS: dict[str, str] = {
    "image_encoder": "image_encoder",
    "sam_prompt_encoder": "prompt_encoder",
    "sam_mask_decoder": "mask_decoder",
}
VIDEO_ONLY = "video_only"
PART_NAMES: tuple[str, ...] = (*PARTS.values(), VIDEO_ONLY)


def part_of(param_name: str) -> str:
    """The part a parameter belongs to: ``image_encoder``, ``prompt_encoder``, ``mask_decoder``
    or ``video_only`` (everything a single image never uses)."""
    return PARTS.get(param_name.split(".", 1)[0], VIDEO_ONLY)


def lora_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The peft LoRA layers inside ``model``, by module path (empty for a plain model)."""
    if "peft" not in sys.modules:  # no peft layer can exist before peft is imported (a slow import)
        return {}
    from peft.tuners.lora import LoraLayer

    return {name: module for name, module in model.named_modules() if isinstance(module, LoraLayer)}


def _merged_base_layer(layer: nn.Module) -> dict[str, torch.Tensor]:
    """The state of a peft LoRA layer's base layer with its active adapters merged by peft."""
    if layer.merged:  # peft already added the update to the base weight
        return {k: v.detach().clone() for k, v in layer.get_base_layer().state_dict().items()}
    dtypes = {k: v.dtype for k, v in layer.get_base_layer().state_dict().items()}
    with torch.no_grad():
        twin = deepcopy(layer).float()  # in float32, so a bf16 weight is rounded once, at the end
        twin.merge(safe_merge=True)
    return {k: v.detach().to(dtypes[k]) for k, v in twin.get_base_layer().state_dict().items()}


def _check_sam2(model: nn.Module) -> None:
    missing = [p for p in PARTS if not isinstance(getattr(model, p, None), nn.Module)]
    if missing:
        raise TypeError(
            f"an adapter needs a SAM 2 model (sam2.modeling.sam2_base.SAM2Base), got "
            f"{type(model).__name__} without {', '.join(missing)}"
        )


class Adapter:
    """Base class: decides ``requires_grad`` for every parameter of a ``SAM2Base``.

    Subclasses say which image-encoder parameters train (``_encoder_param_trainable``) and may
    change the model's structure first (``_prepare``, used by LoRA).

    Args:
        train_prompt_encoder: train the prompt encoder.
        train_mask_decoder: train the mask decoder.
        encoder_lr_scale: the image encoder's learning rate is ``lr * encoder_lr_scale``
            (see :func:`samtune.training.optim.param_groups`).
        memory: also train the video-only modules (the memory path); it learns only from clips
            (``training=video``), an image step never reaches it.
    """

    name: str = "adapter"

    def __init__(
        self,
        *,
        train_prompt_encoder: bool = True,
        train_mask_decoder: bool = True,
        encoder_lr_scale: float = 1.0,
        memory: bool = False,
    ) -> None:
        self.memory = bool(memory)
        self.train_prompt_encoder = bool(train_prompt_encoder)
        self.train_mask_decoder = bool(train_mask_decoder)
        self.encoder_lr_scale = check_number("adapter.encoder_lr_scale", encoder_lr_scale, ge=0)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._init_kwargs().items())
        return f"{type(self).__name__}({args})"

    @property
    def encoder_trainable(self) -> bool:
        """Whether anything inside the image encoder trains (so its forward needs gradients)."""
        raise NotImplementedError

    def _init_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "train_prompt_encoder": self.train_prompt_encoder,
            "train_mask_decoder": self.train_mask_decoder,
            "encoder_lr_scale": self.encoder_lr_scale,
        }
        if self.memory:  # recorded when on: the records of image-only adapters stay as they were
            kwargs["memory"] = True
        return kwargs

    def hydra_config(self) -> dict[str, Any]:
        """The Hydra config (with ``_target_``) that instantiates an equal adapter."""
        cls = type(self)
        module = (
            "samtune.models.adapters"
            if cls.__module__.startswith("samtune.models.adapters.")
            else cls.__module__
        )
        return {"_target_": f"{module}.{cls.__qualname__}", **self._init_kwargs()}

    # -- structure and trainability -------------------------------------------------------------

    def _prepare(self, model: nn.Module) -> None:
        """Change the model's structure before trainability is set (nothing by default)."""

    def _encoder_param_trainable(self, name: str) -> bool:
        raise NotImplementedError

    def is_trainable(self, name: str) -> bool:
        """Whether the parameter ``name`` of an adapted model trains under this adapter."""
        part = part_of(name)
        if part == "image_encoder":
            return self._encoder_param_trainable(name)
        if part == "prompt_encoder":
            return self.train_prompt_encoder
        if part == "mask_decoder":
            return self.train_mask_decoder
        return self.memory

    def apply(self, model: nn.Module) -> nn.Module:
        """Adapt ``model`` in place and set ``requires_grad`` on every parameter.

        Returns:
            The same model object (still a ``SAM2Base``).

        Raises:
            TypeError: if ``model`` is not a SAM 2 model.
            ValueError: if the model was adapted already, or nothing would train.
        """
        _check_sam2(model)
        if lora_modules(model):
            raise ValueError(
                "the model already carries LoRA layers: apply an adapter to a fresh model"
            )
        self._prepare(model)
        for name, param in model.named_parameters():
            param.requires_grad_(self.is_trainable(name))
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError(
                f"{self!r} leaves no parameter to train: enable train_prompt_encoder, "
                "train_mask_decoder, or choose adapter=lora or adapter=full"
            )
        return model

    # -- export ---------------------------------------------------------------------------------

    def merged_state_dict(self, model: nn.Module, *, copy: bool = True) -> dict[str, torch.Tensor]:
        """Weights under the original sam2 key names, with any LoRA update folded in.

        peft folds each LoRA layer (``merge(safe_merge=True)``: ``W + scaling * B @ A`` for plain
        LoRA, NaN-checked) on a float32 copy of that layer, so the model is not changed; the
        result keeps the weight's dtype. The LoRA tensors are dropped and
        ``<path>.base_layer.<p>`` becomes ``<path>.<p>``.

        Args:
            model: a model this adapter was applied to (or a plain one).
            copy: return detached copies; False shares the storage of tensors that LoRA does
                not change (for a model that is about to be discarded).

        Raises:
            RuntimeError: if adapter tensors would be left in the result.
        """
        # each key of a LoRA layer -> (its sam2 key, its merged value), or None for a LoRA tensor
        replaced: dict[str, tuple[str, torch.Tensor] | None] = {}
        for path, layer in lora_modules(model).items():
            base = _merged_base_layer(layer)
            for key in layer.state_dict():
                rest = key.removeprefix("base_layer.")
                replaced[f"{path}.{key}"] = (f"{path}.{rest}", base[rest]) if rest != key else None
        merged: dict[str, torch.Tensor] = {}
        for key, value in model.state_dict().items():
            if key not in replaced:
                merged[key] = value.detach().clone() if copy else value.detach()
            elif replaced[key] is not None:
                new_key, new_value = replaced[key]
                merged[new_key] = new_value
        leftover = [k for k in merged if ".lora_" in k or ".base_layer." in k]
        if leftover:
            raise RuntimeError(f"unmerged adapter tensors left in the state dict: {leftover[:3]}")
        return merged

    # -- reporting and optimisation -------------------------------------------------------------

    def parameter_report(self, model: nn.Module) -> dict[str, Any]:
        """Count parameters: ``{"adapter", "trainable", "total", "trainable_fraction", "by_part"}``.

        ``by_part`` maps ``image_encoder``, ``prompt_encoder``, ``mask_decoder`` and
        ``video_only`` to ``{"trainable": int, "total": int}``; the parts add up to the totals.
        """
        by_part = {part: {"trainable": 0, "total": 0} for part in PART_NAMES}
        for name, param in model.named_parameters():
            counts = by_part[part_of(name)]
            counts["total"] += param.numel()
            if param.requires_grad:
                counts["trainable"] += param.numel()
        trainable = sum(c["trainable"] for c in by_part.values())
        total = sum(c["total"] for c in by_part.values())
        return {
            "adapter": self.name,
            "trainable": trainable,
            "total": total,
            "trainable_fraction": trainable / total if total else 0.0,
            "by_part": by_part,
        }
