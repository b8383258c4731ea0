"""From a ``Sample`` at its own resolution to the model's square input, with optional augmentation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from samtune.data.sample import Sample
from samtune.segmenter.sam2 import normalize_images
from samtune.validation import check_number, check_probability

PROBABILITY_KEYS = ("hflip", "vflip", "rot90", "brightness_contrast", "affine")
AUGMENT_DEFAULTS: dict[str, Any] = {
    "hflip": 0.0,  # probability of a horizontal flip
    "vflip": 0.0,  # probability of a vertical flip
    "rot90": 0.0,  # probability of a rotation by 90, 180 or 270 degrees
    "brightness_contrast": 0.0,  # probability of a brightness/contrast change
    "affine": 0.0,  # probability of a small scale/translate/rotate
    "brightness_limit": 0.2,  # brightness change, fraction of the range
    "contrast_limit": 0.2,  # contrast change, fraction
    "scale": (0.9, 1.1),  # affine scale range
    "translate": 0.05,  # affine shift, fraction of the side, both directions
    "rotate": 15.0,  # affine rotation, degrees, both directions
}


class SamTransform:
    """Resize (and for training augment) a :class:`Sample` into the model's input.

    Order: resize, then augment (when ``train`` and ``augment`` asks for it), then drop small
    objects, then normalise.

    - The image is resized to ``image_size x image_size`` without keeping the aspect ratio,
      bilinear with antialiasing on 0..1 floats: exactly ``SAM2ImagePredictor.set_image`` (and
      SAM 2's training), so with augmentation off the result equals
      :func:`samtune.segmenter.sam2.preprocess_like_predictor`.
    - Masks are resized with nearest neighbour at pixel centres: output pixel ``i`` takes input
      pixel ``floor((i + 0.5) * H / image_size)`` (rows; columns alike), so masks stay binary and
      line up with the bilinear image.
    - Augmentations (albumentations, applied to image and masks together, masks by nearest
      neighbour): horizontal flip, vertical flip, rot90, brightness/contrast, affine (scale,
      translate, rotate; new pixels are 0). Each runs with its probability from ``augment``
      (keys and defaults in :data:`AUGMENT_DEFAULTS`); all are off when ``augment`` is None or
      ``train`` is False.
    - The sample's ignore mask (if any) is resized and augmented with the masks, as one more
      mask; pixels an affine moves in from outside are not ignored (masks there are empty too).
    - Objects with fewer than ``min_object_area`` pixels after resizing and augmentation are
      dropped and counted in ``meta["dropped_small"]``; so are objects left with no pixel
      (whatever ``min_object_area``): there is nothing to prompt.

    Args:
        image_size: side of the square model input.
        train: whether augmentations may run.
        augment: probabilities and ranges, or None for no augmentation.
        min_object_area: smallest object kept, in pixels at ``image_size``.
        seed: seed of the augmentation random stream (None: fresh entropy).

    Returns (when called on a ``Sample``):
        ``{"image": float32 3 x S x S normalised, "masks": bool N x S x S, "class_ids": int64 N,
        "ignore": bool S x S or None, "meta": dict}``, the ignore mask resized and augmented
        exactly as the masks are (nearest neighbour), ``meta`` being the sample's plus ``orig_size`` ``(H, W)`` and
        ``dropped_small``.
    """

    def __init__(
        self,
        *,
        image_size: int,
        train: bool,
        augment: Mapping[str, Any] | None = None,
        min_object_area: int = 4,
        seed: int | None = None,
    ) -> None:
        self.image_size = check_number("data.image_size", image_size, ge=1, integer=True)
        self.train = bool(train)
        self.min_object_area = check_number(
            "data.min_object_area", min_object_area, ge=0, integer=True
        )
        self.augment = augment_settings(augment)
        self.seed = None if seed is None else int(seed)
        self.pipeline = _build_pipeline(self.augment, seed) if self.train and self.augment else None

    def reseed(self, seed: int) -> None:
        """Restart the augmentation random stream from ``seed`` (each DataLoader worker does)."""
        if self.pipeline is not None:
            self.pipeline.set_random_seed(seed)

    def __call__(self, sample: Sample, key: tuple[int, int] | None = None) -> dict[str, Any]:
        """The model input of ``sample``.

        Args:
            sample: the image and its objects.
            key: ``(epoch, dataset index)`` of the item: its augmentation is then drawn from a
                stream keyed by ``(seed, epoch, index)`` (:func:`augmentation_seed`), so it does
                not depend on the batch, the worker, the rank or a resume. None: the
                transform's running stream.
        """
        height, width = sample.image.shape[:2]
        image = resize_image(sample.image, self.image_size)
        masks = resize_masks(sample.masks, self.image_size)
        ignore = None
        if sample.ignore is not None:  # carried as one more mask: the same nearest resize
            masks = np.concatenate([masks, resize_masks(sample.ignore[None], self.image_size)])
        if self.pipeline is not None:
            if key is not None:
                self.pipeline.set_random_seed(augmentation_seed(self.seed or 0, *key))
            image, masks = self._augment(image, masks)
        if sample.ignore is not None:
            masks, ignore = masks[:-1], masks[-1] & ~masks[:-1].any(axis=0)
        keep = masks.sum(axis=(1, 2)) >= kept_area(self.min_object_area)
        meta = {
            **sample.meta,
            "orig_size": (int(height), int(width)),
            "dropped_small": int((~keep).sum()),
        }
        return {
            "image": normalize_images(image[None])[0],
            "masks": torch.from_numpy(np.ascontiguousarray(masks[keep])),
            "class_ids": torch.as_tensor(np.asarray(sample.class_ids)[keep], dtype=torch.int64),
            "ignore": None if ignore is None else torch.from_numpy(np.ascontiguousarray(ignore)),
            "meta": meta,
        }

    def _augment(self, image: torch.Tensor, masks: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        array = np.ascontiguousarray(image.permute(1, 2, 0).numpy())
        if masks.shape[0]:
            out = self.pipeline(image=array, masks=masks.astype(np.uint8))
            masks = np.asarray(out["masks"]).astype(bool)
        else:
            out = self.pipeline(image=array)
        return torch.from_numpy(np.ascontiguousarray(out["image"])).permute(2, 0, 1).float(), masks


def augmentation_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of the augmentation of dataset item ``index`` in ``epoch``: a well-mixed function
    of ``(seed, epoch, index)`` (its own stream, apart from the prompt streams of
    :mod:`samtune.prompts.streams`)."""
    # five words: no prompt stream (four words, samtune.prompts.streams) can share this key
    key = [int(seed), 2, int(epoch), int(index), 0]
    return int(np.random.SeedSequence(key).generate_state(1, dtype=np.uint32)[0])


def resize_image(image: np.ndarray, size: int) -> torch.Tensor:
    """``H x W x 3`` uint8 -> ``3 x size x size`` float 0..1, as ``SAM2ImagePredictor`` resizes."""
    from torchvision.transforms.functional import InterpolationMode, resize

    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(255.0)
    return resize(tensor, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True)


def resize_masks(masks: np.ndarray, size: int) -> np.ndarray:
    """``N x H x W`` bool -> ``N x size x size`` bool, nearest neighbour at pixel centres."""
    # float64 indices: cv2's INTER_NEAREST_EXACT and torch's "nearest-exact" round differently
    height, width = masks.shape[1:]
    rows = np.minimum(((np.arange(size) + 0.5) * height / size).astype(np.int64), height - 1)
    cols = np.minimum(((np.arange(size) + 0.5) * width / size).astype(np.int64), width - 1)
    return masks[:, rows[:, None], cols[None, :]].astype(bool, copy=False)


def kept_area(min_object_area: int) -> int:
    """The fewest pixels at ``image_size`` an object needs to be kept: ``min_object_area``, and
    at least 1."""
    return max(1, int(min_object_area))


def areas_at_size(masks: np.ndarray, size: int) -> np.ndarray:
    """Pixels of each of ``N x H x W`` masks once resized to ``size`` as training resizes them
    (:func:`resize_masks`), one object at a time (memory: one ``size x size`` mask)."""
    return np.array(
        [int(resize_masks(m[None], size).sum()) for m in masks], dtype=np.int64
    ).reshape(len(masks))


def augment_settings(augment: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Check ``augment`` and fill in defaults; None when nothing would ever run.

    Raises:
        ValueError: an unknown key (listing the known ones) or a probability outside 0..1.
    """
    if augment is None:
        return None
    unknown = sorted(set(augment) - set(AUGMENT_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown augment keys {unknown}; known: {sorted(AUGMENT_DEFAULTS)}")
    settings = dict(AUGMENT_DEFAULTS)
    for key, value in augment.items():
        if key == "scale":
            value = tuple(float(v) for v in value)
            if len(value) != 2 or not 0 < value[0] <= value[1]:
                raise ValueError(
                    f"data.augment.scale must be (low, high) with 0 < low <= high, got {value!r}"
                )
        elif key in PROBABILITY_KEYS:
            value = check_probability(f"data.augment.{key}", value)
        else:
            value = check_number(f"data.augment.{key}", value, ge=0)
        settings[key] = value
    if not any(settings[key] > 0 for key in PROBABILITY_KEYS):
        return None
    return settings


def _build_pipeline(settings: dict[str, Any], seed: int | None):
    import albumentations as A
    import cv2

    steps = []
    if settings["hflip"] > 0:
        steps.append(A.HorizontalFlip(p=settings["hflip"]))
    if settings["vflip"] > 0:
        steps.append(A.VerticalFlip(p=settings["vflip"]))
    if settings["rot90"] > 0:
        steps.append(A.RandomRotate90(p=settings["rot90"]))
    if settings["brightness_contrast"] > 0:
        steps.append(
            A.RandomBrightnessContrast(
                brightness_limit=settings["brightness_limit"],
                contrast_limit=settings["contrast_limit"],
                p=settings["brightness_contrast"],
            )
        )
    if settings["affine"] > 0:
        shift, angle = settings["translate"], settings["rotate"]
        steps.append(
            A.Affine(
                scale=settings["scale"],
                translate_percent=(-shift, shift),
                rotate=(-angle, angle),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=0,
                p=settings["affine"],
            )
        )
    return A.Compose(steps, seed=seed)
