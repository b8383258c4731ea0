"""The model-input transform: predictor-identical resize, aligned augmentation, small-object drops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from samtune.data.sample import Sample
from samtune.data.transforms import SamTransform
from samtune.segmenter.sam2 import IMAGENET_MEAN, IMAGENET_STD, preprocess_like_predictor
from tests.helpers import make_blob_sample

ALL_ON = {"hflip": 1.0, "vflip": 0.5, "rot90": 1.0, "brightness_contrast": 1.0, "affine": 1.0}


def _unnormalise(image: torch.Tensor) -> np.ndarray:
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (image * std + mean).mean(0).numpy()


def test_eval_transform_equals_the_predictor_input():
    sample = make_blob_sample(size=(90, 150), n=3, seed=1)
    out = SamTransform(image_size=128, train=False, augment=ALL_ON)(sample)  # augment ignored
    reference = preprocess_like_predictor([sample.image], 128)[0]
    assert out["image"].dtype == torch.float32 and out["image"].shape == (3, 128, 128)
    assert torch.equal(out["image"], reference)
    assert out["masks"].dtype == torch.bool and out["masks"].shape == (3, 128, 128)
    assert out["class_ids"].dtype == torch.int64 and out["class_ids"].tolist() == [1, 1, 1]
    assert out["meta"]["orig_size"] == (90, 150) and out["meta"]["dropped_small"] == 0
    assert out["meta"]["file"] == sample.meta["file"]


def test_masks_resize_by_nearest_neighbour_at_pixel_centres():
    sample = make_blob_sample(size=(90, 150), n=3, seed=2)
    out = SamTransform(image_size=64, train=False, augment=None)(sample)
    reference = (
        F.interpolate(
            torch.from_numpy(sample.masks)[None].float(), size=(64, 64), mode="nearest-exact"
        )[0]
        > 0.5
    )
    assert torch.equal(out["masks"], reference)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_augmentation_keeps_image_and_masks_aligned(seed):
    # objects painted white on black: after any geometric change they must still sit under their masks
    h, w = 80, 112
    masks = np.zeros((2, h, w), dtype=bool)
    masks[0, 10:30, 15:50] = True
    masks[1, 45:70, 70:100] = True
    image = np.zeros((h, w, 3), dtype=np.uint8)
    image[masks.any(0)] = 255
    sample = Sample(image=image, masks=masks, meta={"file": "painted.png", "image_id": 0})
    plain = SamTransform(image_size=64, train=False)(sample)
    out = SamTransform(image_size=64, train=True, augment=ALL_ON, min_object_area=0, seed=seed)(
        sample
    )
    assert not torch.equal(out["masks"], plain["masks"])  # the augmentation did move things
    gray = _unnormalise(out["image"])
    union = out["masks"].any(0).numpy()
    assert union.sum() > 200
    inside, outside = gray[union], gray[~union]
    assert inside.mean() > outside.mean() + 0.4
    bright = gray > (inside.mean() + outside.mean()) / 2
    iou = (bright & union).sum() / (bright | union).sum()
    assert iou > 0.85
    for mask in out["masks"].numpy():  # each object survives and sits on bright pixels
        assert mask.sum() > 50 and gray[mask].mean() > 0.8 * inside.mean()


def test_augmentation_is_seeded():
    sample = make_blob_sample(seed=5)
    first = SamTransform(image_size=64, train=True, augment=ALL_ON, seed=11)(sample)
    again = SamTransform(image_size=64, train=True, augment=ALL_ON, seed=11)(sample)
    assert torch.equal(first["image"], again["image"]) and torch.equal(
        first["masks"], again["masks"]
    )


def test_tiny_objects_dropped_after_resizing_with_a_count():
    image = np.zeros((200, 200, 3), dtype=np.uint8)
    masks = np.zeros((3, 200, 200), dtype=bool)
    # at 64 px output row i samples input row floor((i + 0.5) * 200 / 64)
    masks[0, 10:14, 10:14] = True  # rows/cols 10..13 -> only output 3 (3.5 * 3.125 = 10.9): 1 px
    masks[1, 50:150, 50:150] = True  # -> outputs 16..47: 32 x 32 = 1024 px, kept
    masks[2, 180:186, 180:185] = True  # rows -> outputs 58, 59; cols -> 58 only: 2 px, dropped
    sample = Sample(
        image=image,
        masks=masks,
        class_ids=np.array([3, 4, 5]),
        meta={"file": "t.png", "image_id": 0},
    )
    out = SamTransform(image_size=64, train=False, min_object_area=4)(sample)
    assert out["meta"]["dropped_small"] == 2
    assert out["class_ids"].tolist() == [4] and out["masks"].shape == (1, 64, 64)
    assert int(out["masks"][0].sum()) == 32 * 32
    keep_all = SamTransform(image_size=64, train=False, min_object_area=0)(sample)
    assert keep_all["meta"]["dropped_small"] == 0 and keep_all["masks"].sum((1, 2)).tolist() == [
        1,
        1024,
        2,
    ]


def test_sample_without_objects_and_bad_settings():
    sample = Sample(
        image=np.zeros((30, 40, 3), np.uint8),
        masks=np.zeros((0, 30, 40), bool),
        meta={"file": "e.png"},
    )
    out = SamTransform(image_size=32, train=True, augment=ALL_ON, seed=0)(sample)
    assert out["masks"].shape == (0, 32, 32) and out["class_ids"].shape == (0,)
    with pytest.raises(ValueError, match="unknown augment keys"):
        SamTransform(image_size=32, train=True, augment={"flip_h": 0.5})
    with pytest.raises(
        ValueError, match=r"data\.augment\.hflip must be a probability in \[0, 1\], got 1\.5"
    ):
        SamTransform(image_size=32, train=True, augment={"hflip": 1.5})


def test_an_items_augmentation_depends_only_on_seed_epoch_and_index():
    """Keyed by (seed, epoch, dataset index): the same whatever stream the transform was on
    (another rank, worker or a resumed run), different for another epoch or index."""
    from samtune.data.datamodules.base import TransformedDataset
    from samtune.data.datasets.synthetic import SyntheticDataset

    samples = SyntheticDataset(num_images=3, size=(48, 64), objects=(2, 3), seed=0)
    augment = {"hflip": 0.5, "vflip": 0.5, "rot90": 0.5, "brightness_contrast": 0.3, "affine": 0.3}

    def dataset(stream_seed: int) -> TransformedDataset:
        transform = SamTransform(image_size=32, train=True, augment=augment, seed=7)
        transform.reseed(stream_seed)  # as a rank or a DataLoader worker does
        return TransformedDataset(samples, transform)

    a, b = dataset(1), dataset(99)
    b[(0, 2)]  # b's stream has moved on
    for key in [(0, 1), (3, 1), (0, 2)]:
        x, y = a[key], b[key]
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["masks"], y["masks"])
        assert x["index"] == key[1]
    images = {tuple(a[(epoch, 1)]["image"].flatten()[:64].tolist()) for epoch in range(8)}
    assert len(images) > 1  # other epochs augment differently
    assert a[1]["index"] == 1  # a plain index still works (the transform's running stream)
