"""Full fine-tuning: the whole single-image path trains, the encoder at a reduced learning rate."""

from __future__ import annotations

from samtune.models.adapters.base import Adapter


class FullFineTune(Adapter):
    """Every image-encoder parameter trains (video-only modules stay frozen).

    Args:
        train_prompt_encoder: train the prompt encoder.
        train_mask_decoder: train the mask decoder.
        encoder_lr_scale: the encoder's learning rate relative to the decoder's (default 0.1).
    """

    name = "full"

    def __init__(
        self,
        *,
        train_prompt_encoder: bool = True,
        train_mask_decoder: bool = True,
        encoder_lr_scale: float = 0.1,
        memory: bool = False,
    ) -> None:
        super().__init__(
            train_prompt_encoder=train_prompt_encoder,
            train_mask_decoder=train_mask_decoder,
            encoder_lr_scale=encoder_lr_scale,
            memory=memory,
        )

    @property
    def encoder_trainable(self) -> bool:
        """Always True."""
        return True

    def _encoder_param_trainable(self, name: str) -> bool:
        return True
