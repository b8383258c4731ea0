"""LoRA on the Hiera trunk's attention (and optionally MLP) layers, injected with peft.

``peft.inject_adapter_in_model`` wraps the matched ``nn.Linear`` layers in place, so the model
stays a ``SAM2Base`` and key names change only inside those layers
(``<path>.base_layer.weight``, ``<path>.lora_A.default.weight``, ``<path>.lora_B.default.weight``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from torch import nn

from samtune.models.adapters.base import Adapter, lora_modules, part_of
from samtune.validation import check_number

# peft matches a string ``target_modules`` against each full module path with ``re.fullmatch``,
# so these are anchored at both ends: the stage-change ``blocks.N.proj`` and the memory
# attention's ``*_proj`` layers are not hit.
ATTENTION_TARGET = r"image_encoder\.trunk\.blocks\.\d+\.attn\.(qkv|proj)"
MLP_TARGET = r"image_encoder\.trunk\.blocks\.\d+\.mlp\.layers\.\d+"


class LoRAAdapter(Adapter):
    """Low-rank updates ``W + (alpha / rank) * B @ A`` on the matched linear layers.

    The base weights of the image encoder stay frozen; the LoRA matrices train, and so do the
    prompt encoder and mask decoder per their switches.

    Args:
        rank: LoRA rank ``r``.
        alpha: LoRA ``alpha``; the update is scaled by ``alpha / rank``.
        dropout: dropout on the LoRA branch input during training.
        targets: regexes, each matched against the full module path with ``re.fullmatch``;
            default: the trunk's attention ``qkv`` and ``proj`` layers.
        mlp: also adapt the trunk's MLP layers.
        train_prompt_encoder: train the prompt encoder.
        train_mask_decoder: train the mask decoder.
        encoder_lr_scale: learning-rate factor for the LoRA matrices.
    """

    name = "lora"

    def __init__(
        self,
        *,
        rank: int = 8,
        alpha: float = 16,
        dropout: float = 0.0,
        targets: Sequence[str] | None = None,
        mlp: bool = False,
        train_prompt_encoder: bool = True,
        train_mask_decoder: bool = True,
        encoder_lr_scale: float = 1.0,
        memory: bool = False,
    ) -> None:
        super().__init__(
            train_prompt_encoder=train_prompt_encoder,
            train_mask_decoder=train_mask_decoder,
            encoder_lr_scale=encoder_lr_scale,
            memory=memory,
        )
        self.rank = check_number("adapter.rank", rank, ge=1, integer=True)
        self.alpha = check_number("adapter.alpha", alpha, gt=0)
        self.dropout = check_number("adapter.dropout", dropout, ge=0, lt=1)
        if isinstance(targets, str):
            raise ValueError(
                f"adapter.targets must be a list of regexes, got the string {targets!r}"
            )
        self.targets = [str(t) for t in targets] if targets is not None else [ATTENTION_TARGET]
        if not self.targets:
            raise ValueError("adapter.targets is empty: give at least one module-path regex")
        for target in self.targets:
            try:
                re.compile(target)
            except re.error as exc:
                raise ValueError(
                    f"adapter.targets: {target!r} is not a valid regex ({exc})"
                ) from None
        self.mlp = bool(mlp)
        self._lora_params: set[str] = set()

    def _init_kwargs(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "alpha": self.alpha,
            "dropout": self.dropout,
            "targets": list(self.targets),
            "mlp": self.mlp,
            **super()._init_kwargs(),
        }

    @property
    def patterns(self) -> list[str]:
        """All regexes used: ``targets`` plus the MLP pattern when ``mlp`` is set."""
        return self.targets + ([MLP_TARGET] if self.mlp and MLP_TARGET not in self.targets else [])

    @property
    def encoder_trainable(self) -> bool:
        """True: the LoRA matrices inside the image encoder train."""
        return True

    def _prepare(self, model: nn.Module) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        # a single string makes peft use re.fullmatch on each module path
        pattern = "|".join(f"(?:{p})" for p in self.patterns)
        config = LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=pattern,
            bias="none",
        )
        try:
            inject_adapter_in_model(config, model)
        except ValueError as exc:
            raise ValueError(
                f"LoRA targets {self.patterns} match no usable layer of the model: {exc}"
            ) from exc
        wrapped = lora_modules(model)
        for p in self.patterns:
            if not any(re.fullmatch(p, path) for path in wrapped):
                raise ValueError(f"LoRA target {p!r} matches no layer of the model")
        outside = [path for path in wrapped if part_of(path) == "video_only"]
        if outside:
            raise ValueError(
                f"LoRA targets {self.patterns} hit video-only layers that single images never use: {outside[:3]}"
            )
        self._lora_params = {
            f"{path}.{name}"
            for path, module in wrapped.items()
            for name, _ in module.named_parameters()
            if name.startswith("lora_")
        }

    def is_trainable(self, name: str) -> bool:
        """LoRA matrices train; other encoder weights are frozen; the rest follows the switches."""
        if name in self._lora_params:
            return True
        return super().is_trainable(name)

    def _encoder_param_trainable(self, name: str) -> bool:
        return False
