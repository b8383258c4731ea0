"""Frozen image encoder: only the prompt encoder and mask decoder train."""

from __future__ import annotations

from samtune.models.adapters.base import Adapter


class FrozenEncoder(Adapter):
    """The image encoder stays frozen, so its embeddings can be computed once and cached.

    Args:
        train_prompt_encoder: train the prompt encoder.
        train_mask_decoder: train the mask decoder.
        encoder_lr_scale: accepted for a uniform interface; nothing in the encoder trains.
    """

    name = "frozen"

    @property
    def encoder_trainable(self) -> bool:
        """Always False: no image-encoder parameter trains."""
        return False

    def _encoder_param_trainable(self, name: str) -> bool:
        return False
