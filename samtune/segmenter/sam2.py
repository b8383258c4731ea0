"""SAM 2.1 as a :class:`~samtune.segmenter.base.Segmenter`, and the two halves of its image forward.

:class:`Sam2Segmenter` wraps the official ``SAM2Base`` (its ``.model``) and owns what decides how
it runs: the embedding cache of a frozen encoder, activation checkpointing and compilation.

The free functions are the halves it is made of, batched over images and over objects:
``encode`` runs the image encoder once per image; ``decode`` runs the prompt encoder and mask
decoder for many objects at once, each object pointing at its image by index. Both call the
official model's own modules in the same order as ``SAM2ImagePredictor`` does, but with
gradients allowed, so training, evaluation and prediction share one code path.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np
import torch

from samtune.segmenter.base import (
    Decoded,
    Features,
    Segmenter,
    run_in_float32,
    upsample_logits,
)
from samtune.segmenter.checkpointing import enable_activation_checkpointing

if TYPE_CHECKING:
    from samtune.segmenter.cache import EmbeddingCache

__all__ = [
    "Decoded",
    "Features",
    "Sam2Segmenter",
    "decode",
    "encode",
    "encode_frozen",
    "upsample_logits",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """Turn ``B x 3 x H x W`` uint8 (0-255) or float (0-1) images into SAM's normalised input."""
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std


@functools.lru_cache(maxsize=8)
def _predictor_transforms(image_size: int):
    from sam2.utils.transforms import SAM2Transforms

    return SAM2Transforms(resolution=image_size, mask_threshold=0.0)


def preprocess_like_predictor(images: list[np.ndarray], image_size: int) -> torch.Tensor:
    """Resize and normalise HxWx3 uint8 images exactly as ``SAM2ImagePredictor.set_image`` does."""
    transforms = _predictor_transforms(int(image_size))
    return torch.stack([transforms(np.ascontiguousarray(img)) for img in images])


def feature_sizes(model: torch.nn.Module) -> list[tuple[int, int]]:
    """Spatial sizes of the three feature levels the mask decoder uses, derived from the model.

    ``SAM2ImagePredictor`` hard-codes these for 1024 px; this gives them for any ``image_size``.
    """
    s, stride = int(model.image_size), int(model.backbone_stride)
    return [
        (s // (stride // 4), s // (stride // 4)),
        (s // (stride // 2), s // (stride // 2)),
        (s // stride, s // stride),
    ]


def features_from_backbone(model: torch.nn.Module, backbone_out: dict) -> Features:
    """:class:`Features` from ``forward_image``'s output (FPN levels after ``conv_s0``/``conv_s1``).

    Follows ``SAM2Base._prepare_backbone_features`` and adds the no-memory embedding, as
    ``SAM2ImagePredictor.set_image`` does.
    """
    _, vision_feats, _, feat_sizes = model._prepare_backbone_features(backbone_out)
    if model.directly_add_no_mem_embed:
        vision_feats[-1] = vision_feats[-1] + model.no_mem_embed
    b = backbone_out["backbone_fpn"][0].shape[0]
    feats = [f.permute(1, 2, 0).reshape(b, -1, *size) for f, size in zip(vision_feats, feat_sizes)]
    return Features(image_embed=feats[-1], high_res=feats[:-1])


def encode(model: torch.nn.Module, images: torch.Tensor) -> Features:
    """Run the image encoder on normalised ``B x 3 x S x S`` images."""
    return features_from_backbone(model, model.forward_image(images))


def decoder_convs(model: torch.nn.Module) -> list[torch.nn.Module]:
    """``conv_s0``/``conv_s1``: mask-decoder layers that ``forward_image`` applies to the FPN."""
    if not getattr(model, "use_high_res_features_in_sam", False):
        return []
    return [model.sam_mask_decoder.conv_s0, model.sam_mask_decoder.conv_s1]


def apply_decoder_convs(model: torch.nn.Module, levels: list[torch.Tensor]) -> list[torch.Tensor]:
    """The FPN levels with ``conv_s0``/``conv_s1`` applied to the first two (as ``forward_image``)."""
    convs = decoder_convs(model)
    return [convs[i](f) if i < len(convs) else f for i, f in enumerate(levels)]


def features_from_levels(model: torch.nn.Module, levels: list[torch.Tensor]) -> Features:
    """:class:`Features` from the FPN levels after ``conv_s0``/``conv_s1``, as ``encode`` makes them.

    The same code path as :func:`encode`, so the values are identical (the positional encodings
    that ``forward_image`` also returns are not used by the features).
    """
    return features_from_backbone(
        model, {"backbone_fpn": list(levels), "vision_pos_enc": list(levels)}
    )


def encode_frozen(model: torch.nn.Module, images: torch.Tensor) -> Features:
    """:func:`encode` for a frozen image encoder, with the same values.

    The image encoder runs without a graph; ``conv_s0``/``conv_s1`` (mask-decoder layers that
    ``forward_image`` applies) and ``no_mem_embed`` run under the current grad mode, so they train
    exactly as they do on a cache hit.
    """
    with torch.no_grad():
        levels = model.image_encoder(images)["backbone_fpn"]
    return features_from_levels(model, apply_decoder_convs(model, levels))


def boxes_to_points(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """XYXY boxes ``N x 4`` as SAM 2's two corner points with labels 2 and 3."""
    coords = boxes.reshape(-1, 2, 2)
    labels = torch.tensor([[2, 3]], dtype=torch.int, device=boxes.device).repeat(coords.shape[0], 1)
    return coords, labels


def decode(
    model: torch.nn.Module,
    features: Features,
    img_idx: torch.Tensor,
    point_coords: torch.Tensor | None,
    point_labels: torch.Tensor | None,
    *,
    boxes: torch.Tensor | None = None,
    mask_input: torch.Tensor | None = None,
    multimask_output: bool = True,
    image_pe: torch.Tensor | None = None,
) -> Decoded:
    """Prompt encoder + mask decoder for N objects in one batched call.

    Args:
        model: the SAM2Base model.
        features: from :func:`encode`, for the images of the batch.
        img_idx: ``N`` long tensor, the image of each object.
        point_coords: ``N x P x 2`` (x, y) in input-frame pixels (0..image_size), or None.
        point_labels: ``N x P`` (1 positive, 0 negative, -1 padding), or None.
        boxes: ``N x 4`` XYXY in input-frame pixels, placed before the points as SAM 2 does.
        mask_input: ``N x 1 x S/4 x S/4`` logits of a previous prediction, or None.
        multimask_output: three masks per object instead of one.
        image_pe: ``model.sam_prompt_encoder.get_dense_pe()``, if the caller keeps it between
            calls (it depends only on the model); computed here when None.
    """
    points = None
    if point_coords is not None:
        points = (point_coords.float(), point_labels.int())
    if boxes is not None:
        box_coords, box_labels = boxes_to_points(boxes.float())
        if points is not None:
            points = (torch.cat([box_coords, points[0]], 1), torch.cat([box_labels, points[1]], 1))
        else:
            points = (box_coords, box_labels)
    sparse, dense = model.sam_prompt_encoder(points=points, boxes=None, masks=mask_input)
    feats = features.select(img_idx)
    low_res, iou_pred, _, object_score_logits = model.sam_mask_decoder(
        image_embeddings=feats.image_embed,
        image_pe=model.sam_prompt_encoder.get_dense_pe() if image_pe is None else image_pe,
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask_output,
        repeat_image=False,
        high_res_features=feats.high_res,
    )
    return Decoded(low_res, iou_pred, object_score_logits)


def keep_scores_float32(model: torch.nn.Module) -> None:
    """Run the mask decoder's IoU head and object-score head in float32, also under autocast.

    The mask chosen among the candidates (and the object-present decision) then does not depend
    on the training precision: under bf16 a saturated IoU head gives ties (see
    :func:`samtune.segmenter.base.no_autocast`). Forward hooks only; the weights and state-dict
    keys are untouched.
    """
    decoder = model.sam_mask_decoder
    run_in_float32(decoder.iou_prediction_head)
    if getattr(decoder, "pred_obj_score_head", None) is not None:
        run_in_float32(decoder.pred_obj_score_head)


class Sam2Segmenter(Segmenter):
    """SAM 2.1's single-image path (image encoder, prompt encoder, mask decoder) as a Segmenter.

    The official model stays whole under ``.model``, so its state-dict keys, adapters and export
    are those of ``SAM2Base``; its IoU and object-score heads are set to run in float32
    (:func:`keep_scores_float32`). The image encoder counts as frozen while none of its parameters
    requires a gradient (``adapter=frozen``, or any model under evaluation that was frozen).

    Args:
        model: the official ``SAM2Base``, adapters already applied.
        embedding_cache: serves :meth:`encode` while the image encoder is frozen (unused while
            it trains).
        activation_checkpointing: checkpoint every Hiera block, if the image encoder trains.
        compile_encoder: ``torch.compile`` the image encoder (static shapes).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        embedding_cache: EmbeddingCache | None = None,
        activation_checkpointing: bool = False,
        compile_encoder: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.image_size = int(model.image_size)
        self.embedding_cache = embedding_cache
        keep_scores_float32(model)
        if activation_checkpointing and not self.encoder_frozen:
            enable_activation_checkpointing(model)
        if compile_encoder:
            model.image_encoder.compile(dynamic=False)

    @property
    def encoder_frozen(self) -> bool:
        """Whether no image-encoder parameter requires a gradient."""
        return not any(p.requires_grad for p in self.model.image_encoder.parameters())

    def enable_activation_checkpointing(self) -> int:
        """Checkpoint every Hiera block from now on (0 while the encoder is frozen: nothing to
        save there); returns the number of blocks that checkpoint."""
        if self.encoder_frozen:
            return 0
        return enable_activation_checkpointing(self.model)

    def preprocess(self, images: list[np.ndarray]) -> torch.Tensor:
        """Resize and normalise as ``SAM2ImagePredictor.set_image`` does."""
        return preprocess_like_predictor(images, self.image_size)

    def encode(self, images: torch.Tensor) -> Features:
        """Image features: the embedding cache or :func:`encode_frozen` while the encoder is
        frozen, else :func:`encode` under the current grad mode."""
        if not self.encoder_frozen:
            return encode(self.model, images)
        if self.embedding_cache is not None:
            return self.embedding_cache.encode(self.model, images)
        return encode_frozen(self.model, images)

    def decode(
        self,
        features: Features,
        img_idx: torch.Tensor,
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        *,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool,
    ) -> Decoded:
        """:func:`decode` with this segmenter's model."""
        return decode(
            self.model,
            features,
            img_idx,
            coords,
            labels,
            boxes=boxes,
            mask_input=mask_input,
            multimask_output=multimask_output,
        )


def as_segmenter(model: torch.nn.Module) -> Segmenter:
    """``model`` itself if it is a :class:`Segmenter`, else a plain ``SAM2Base`` wrapped in a
    :class:`Sam2Segmenter` (no cache, nothing changed on the model)."""
    return model if isinstance(model, Segmenter) else Sam2Segmenter(model)
