"""The clip datamodules' loaders: keyed training clips (the same after a resume), whole videos
for evaluation at original resolution, one augmentation draw per clip, the clip collate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samtune.data.clip import Clip
from samtune.data.clip_transforms import ClipTransform, normalize_frames
from samtune.data.datamodules.clips import collate_clips
from samtune.data.datamodules.volume_clips import VolumeClipDataModule
from samtune.data.datamodules.vos import VosDataModule
from samtune.data.sample import DataError
from samtune.data.transforms import resize_image, resize_masks
from tests.data.clip_layouts import make_moving_clip, write_vos
from tests.helpers import write_cases


def keys(loader) -> list[list[tuple[int, int]]]:
    return [list(zip(b["epochs"].tolist(), b["indices"].tolist())) for b in loader]


def test_vos_loaders_draw_keyed_clips_and_resume_where_they_stopped(tmp_path):
    write_vos(tmp_path, "davis", {"train": 4, "val": 1}, n_frames=6)
    options = dict(
        root=tmp_path, image_size=64, num_frames=3, batch_size=2, repeats=2, seed=3,
        augment={"hflip": 0.5, "affine": 0.5, "brightness_contrast": 0.5},
    )  # fmt: skip
    dm = VosDataModule(**options, val_split="val")
    dm.setup("fit")
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(1)
    batches = list(loader)
    assert len(batches) == 4 and batches[0]["frames"].shape == (2, 3, 3, 64, 64)
    assert all(int(e) == 1 for b in batches for e in b["epochs"])
    first_clips = [m["clip_id"] for b in batches for m in b["meta"]]
    # a resumed run (2 batches of epoch 1 done) gets the same clips for the rest of the epoch
    resumed = VosDataModule(**options, val_split="val")
    resumed.load_state_dict({"epoch": 1, "batches_done": 2})
    resumed.setup("fit")
    rest = list(resumed.train_dataloader())
    assert [m["clip_id"] for b in rest for m in b["meta"]] == first_clips[4:]
    for b in rest:
        ref = next(x for x in batches if x["indices"].tolist() == b["indices"].tolist())
        assert torch.equal(b["frames"], ref["frames"])
        assert all(torch.equal(x, y) for x, y in zip(b["masks"], ref["masks"]))
    # evaluation: whole videos at their own resolution (validation is evaluation), or as model
    # input one per batch; raw_dataset is the clip dataset itself
    val = list(dm.val_dataloader())
    assert len(val) == 1 and val[0]["samples"][0].frames.shape == (6, 48, 64, 3)
    inputs = list(dm.input_dataloader("val"))
    assert len(inputs) == 1 and inputs[0]["frames"].shape == (1, 6, 3, 64, 64)
    raw = dm.raw_dataset("val")[0]
    assert isinstance(raw, Clip) and raw.frames.shape == (6, 48, 64, 3)
    assert [s.name for s in dm.raw_dataset("val").sources] == ["val-video0"]
    split = VosDataModule(**options, val_fraction=0.25)
    assert (
        len(split.raw_dataset("val").sources) == 1 and len(split.raw_dataset("train").sources) == 3
    )
    assert "1 videos" in split.summary() or "3 videos" in split.summary()
    with pytest.raises(ValueError, match="no 'test' split"):
        split.raw_dataset("test")


def test_transform_resizes_like_images_and_augments_every_frame_alike():
    scene = make_moving_clip(4, n_frames=4, size=(40, 56))
    clip = Clip.from_label_maps(scene.frames, scene.labels, [1, 2, 3], meta={"file": "v"})
    plain = ClipTransform(image_size=32, train=False, min_object_area=1)(clip)
    expected = normalize_frames(torch.stack([resize_image(f, 32) for f in scene.frames]))
    assert torch.equal(plain["frames"], expected)
    masks = resize_masks(clip.masks.reshape(12, 40, 56), 32).reshape(3, 4, 32, 32)
    assert torch.equal(plain["masks"], torch.from_numpy(masks))
    flip = ClipTransform(image_size=32, train=True, augment={"hflip": 1.0}, min_object_area=1)(clip)
    # (training drops object 3, absent on the first frame)
    assert torch.equal(flip["masks"], torch.from_numpy(np.ascontiguousarray(masks[:2, ..., ::-1])))
    assert torch.allclose(flip["frames"], expected.flip(-1), atol=1e-6)
    shifted = ClipTransform(image_size=32, train=True, augment={"affine": 1.0}, seed=1)(clip)
    centres = [np.argwhere(m).mean(0) - np.argwhere(o).mean(0)
               for m, o in zip(shifted["masks"][0].numpy(), masks[0])]  # fmt: skip
    assert np.allclose(centres, centres[0], atol=1.0)  # the same move on every frame
    # object 3 is absent on frame 0: a training clip cannot prompt it; evaluation keeps it
    train = ClipTransform(image_size=32, train=True, min_object_area=1)(clip)
    assert train["object_ids"].tolist() == [1, 2] and train["meta"]["dropped_small"] == 1
    assert plain["object_ids"].tolist() == [1, 2, 3]


def test_collate_refuses_clips_of_different_lengths():
    scene = make_moving_clip(0, n_frames=4, size=(24, 24))
    t = ClipTransform(image_size=16, train=False, min_object_area=1)
    a = {
        **t(Clip.from_label_maps(scene.frames, scene.labels, [1], meta={"clip_id": "a"})),
        "index": 0,
        "epoch": 0,
    }
    b = {
        **t(Clip.from_label_maps(scene.frames[:3], scene.labels[:3], [1], meta={"clip_id": "b"})),
        "index": 1,
        "epoch": 0,
    }
    assert collate_clips([a, None])["frames"].shape == (1, 4, 3, 16, 16)
    assert collate_clips([None]) is None
    with pytest.raises(DataError, match=r"clips of \[3, 4\] frames in one batch \(\['a', 'b'\]\)"):
        collate_clips([a, b])


def test_volume_clips_split_by_case_like_data_volumes(tmp_path):
    images, labels = write_cases(tmp_path, n=3)
    dm = VolumeClipDataModule(
        images=images, labels=labels, image_size=32, num_frames=3, start="key", val_fraction=0.34
    )
    train_cases = [s.name for s in dm.raw_dataset("train").sources]
    val_cases = [s.name for s in dm.raw_dataset("val").sources]
    pairs = dm.volumes.split_cases()
    assert train_cases == [p.case for p in pairs[0]] and val_cases == [p.case for p in pairs[1]]
    batch = next(iter(dm.train_dataloader()))
    assert batch["frames"].shape == (1, 3, 3, 32, 32)
    clip = dm.raw_dataset("val")[0]
    assert clip.num_frames == 6 and clip.meta["spacing"] == pytest.approx((2.5, 0.8, 0.7))
