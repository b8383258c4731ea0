"""The two halves of a SAM 2 image forward, batched over images and over objects.

``encode`` runs the image encoder once per image; ``decode`` runs the prompt encoder and
mask decoder for many objects at once, each object pointing at its image by index. Both
call the official model's own modules in the same order as ``SAM2ImagePredictor`` does,
but with gradients allowed, so training, evaluation and prediction share one code path.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Features:
    """Image features of a batch of images.

    Attributes:
        image_embed: lowest-resolution embedding, ``B x 256 x S/16 x S/16`` (no-memory embedding added).
        high_res: the two higher-resolution levels used by the mask decoder (``S/4`` and ``S/8``).
    """

    image_embed: torch.Tensor
    high_res: list[torch.Tensor]

    def select(self, idx: torch.Tensor) -> Features:
        """Features of the images ``idx`` (one row per object).

        When every object on a CPU belongs to one image, the rows are views of that image's
        features (``expand``) instead of copies: the decoder only adds to them, and at 1024 px a
        copy is 16 MB per object.
        """
        if idx.device.type == "cpu" and idx.numel() > 0 and bool((idx == idx[0]).all()):
            i, n = int(idx[0]), int(idx.numel())

            def rows(f: torch.Tensor) -> torch.Tensor:
                return f[i : i + 1].expand(n, *f.shape[1:])

            return Features(rows(self.image_embed), [rows(f) for f in self.high_res])
        return Features(self.image_embed[idx], [f[idx] for f in self.high_res])

    def to(self, *args, **kwargs) -> Features:
        """Move or cast every level like ``Tensor.to``."""
        return Features(
            self.image_embed.to(*args, **kwargs), [f.to(*args, **kwargs) for f in self.high_res]
        )


@dataclass
class Decoded:
    """Mask decoder output for N objects.

    Attributes:
        low_res_logits: ``N x M x S/4 x S/4`` mask logits (M = 3 with multimask output, else 1).
        iou_pred: ``N x M`` predicted IoU of each mask.
        object_score_logits: ``N x 1`` logit that the object is present.
    """

    low_res_logits: torch.Tensor
    iou_pred: torch.Tensor
    object_score_logits: torch.Tensor

    def best(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per object, the mask logits and predicted IoU of the mask with the highest predicted IoU.

        Returns:
            ``N x 1 x S/4 x S/4`` logits and ``N`` predicted IoUs (the input itself when M = 1).

        Raises:
            ValueError: logits that are not ``N x M x H x W`` or IoUs that are not ``N x M``.
        """
        if self.low_res_logits.dim() != 4 or self.iou_pred.shape != self.low_res_logits.shape[:2]:
            raise ValueError(
                f"Decoded.best: expected N x M x H x W logits and N x M IoUs, got "
                f"{tuple(self.low_res_logits.shape)} and {tuple(self.iou_pred.shape)}"
            )
        idx = self.iou_pred.argmax(dim=1)
        rows = torch.arange(idx.numel(), device=idx.device)
        return self.low_res_logits[rows, idx].unsqueeze(1), self.iou_pred[rows, idx]


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


def upsample_logits(low_res_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of ``N x M x h x w`` logits to ``size``, as the predictor does."""
    return F.interpolate(low_res_logits.float(), size, mode="bilinear", align_corners=False)
