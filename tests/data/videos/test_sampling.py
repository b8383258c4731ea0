"""Training clips drawn as SAM 2's RandomUniformSampler draws them, keyed by (seed, epoch, index)."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from samtune.data.datasets.videos import ClipSampling, VosDataset
from samtune.data.datasets.videos.frame_folders import FrameFolderSource
from samtune.data.sample import DataError
from tests.data.clip_layouts import write_vos


class LabelSource(FrameFolderSource):
    """A source whose label maps are given arrays (sampling reads only labels)."""

    def __init__(self, labels: np.ndarray, annotated: np.ndarray | None = None) -> None:
        self._maps = labels
        n = len(labels)
        super().__init__(name="v", frames=[__import__("pathlib").Path(f"{t}.png") for t in range(n)],
                         labels=[None] * n)  # fmt: skip
        self.annotated = np.ones(n, bool) if annotated is None else np.asarray(annotated, bool)

    def read_labels(self, indices):
        return np.stack(
            [self._maps[int(t)] if self.annotated[int(t)] else 0 * self._maps[0] for t in indices]
        )


def draws(sampling: ClipSampling, source, n: int = 300, epoch: int = 0):
    return [
        sampling.draw(source, sampling.generator(seed=0, epoch=epoch, index=i)) for i in range(n)
    ]


def test_the_same_key_draws_the_same_clip_and_epochs_differ(tmp_path):
    write_vos(tmp_path, videos={"train": 2}, n_frames=8)
    sampling = ClipSampling(num_frames=3, stride=2, max_num_objects=2, reverse_time_prob=0.5)
    data = VosDataset(root=tmp_path, split="train", sampling=sampling, seed=5, repeats=3)
    assert len(data) == 6
    first = [data[(e, i)].meta["frame_indices"] for e in range(3) for i in range(6)]
    again = VosDataset(root=tmp_path, split="train", sampling=sampling, seed=5, repeats=3)
    assert first == [again[(e, i)].meta["frame_indices"] for e in range(3) for i in range(6)]
    assert data[3].meta["frame_indices"] == data[(0, 3)].meta["frame_indices"]
    assert len({tuple(f) for f in first}) > 3  # epochs, copies and videos draw different clips
    for e in range(3):
        for i in range(6):
            clip = data[(e, i)]
            frames = clip.meta["frame_indices"]
            assert abs(frames[1] - frames[0]) == 2 and len(frames) == 3
            assert clip.present[:, 0].all() and 1 <= len(clip.object_ids) <= 2


def test_random_start_only_where_the_first_frame_is_annotated_and_holds_an_object():
    labels = np.zeros((7, 4, 4), np.int64)
    labels[2:, 0, 0] = 1
    labels[4:, 1, 1] = 2
    annotated = np.array([1, 1, 1, 0, 1, 1, 1], bool)
    sampling = ClipSampling(num_frames=3, max_num_objects=1, reverse_time_prob=0.3)
    got = draws(sampling, LabelSource(labels, annotated))
    starts = Counter(frames[0] for frames, _ in got)
    # forward from 2 or 4 (3 is not annotated, 5 and 6 leave no room), backward from 2, 4, 5, 6
    assert set(starts) == {2, 4, 5, 6}
    assert {tuple(f) for f, _ in got if f[0] == 2} == {(2, 3, 4), (2, 1, 0)}
    assert all(objects[0] in set(np.unique(labels[frames[0]])) - {0} for frames, objects in got)
    reversed_share = sum(frames[0] > frames[1] for frames, _ in got) / len(got)
    assert 0.1 < reversed_share < 0.5
    with pytest.raises(DataError, match="no annotated frame that can start a clip"):
        draws(sampling, LabelSource(np.zeros((5, 4, 4), np.int64)), n=1)
    with pytest.raises(DataError, match="fewer than a clip"):
        draws(ClipSampling(num_frames=8), LabelSource(labels), n=1)


def test_supports_equal_sam2s_random_uniform_sampler(tmp_path):
    """Over many draws, the (frames, objects) outcomes of SAM 2's own sampler on its own reader
    of the same DAVIS folder and those of ours are the same set."""
    from training.dataset.vos_raw_dataset import PNGRawDataset
    from training.dataset.vos_sampler import RandomUniformSampler

    write_vos(tmp_path, videos={"train": 1}, n_frames=6)
    for t in (0, 1):  # the first two frames without objects: starts there are redrawn
        path = tmp_path / "Annotations" / "480p" / "train-video0" / f"{t:05d}.png"
        from samtune.inference.clip_files import write_palette_png

        write_palette_png(path, np.zeros((48, 64), np.uint8))
    raw = PNGRawDataset(
        img_folder=str(tmp_path / "JPEGImages" / "480p"),
        gt_folder=str(tmp_path / "Annotations" / "480p"),
    )
    theirs = RandomUniformSampler(num_frames=3, max_num_objects=2, reverse_time_prob=0.5)
    random.seed(0)
    video, loader = raw.get_video(0)
    ref = Counter()
    for _ in range(400):
        out = theirs.sample(video, loader)
        ref[
            (tuple(f.frame_idx for f in out.frames), tuple(sorted(int(i) for i in out.object_ids)))
        ] += 1
    ours_sampling = ClipSampling(num_frames=3, max_num_objects=2, reverse_time_prob=0.5)
    # SAM 2 reads DAVIS' void value 255 as an object too: compare with void_value=None
    ours = VosDataset(root=tmp_path, split="train", sampling=ours_sampling, void_value=None)
    got = Counter()
    source = ours.sources[0]
    for frames, objects in draws(ours_sampling, source, n=400):
        got[(tuple(frames), tuple(objects))] += 1
    assert set(got) == set(ref)
    # and the masks are SAM 2's segments
    clip = ours[0]
    frames, objects = clip.meta["frame_indices"], clip.object_ids.tolist()
    for t, frame in enumerate(frames):
        segments = loader.load(frame)
        for n, object_id in enumerate(objects):
            absent = np.zeros(clip.masks.shape[2:], bool)
            expected = segments[object_id].numpy() if object_id in segments else absent
            assert np.array_equal(clip.masks[n, t], expected)


def test_key_start_begins_at_the_largest_slice_and_goes_both_ways():
    labels = np.zeros((12, 8, 8), np.int64)
    areas = [0, 1, 2, 3, 5, 9, 16, 9, 5, 3, 0, 0]  # object 1 largest on slice 6
    for t, a in enumerate(areas):
        labels[t].flat[:a] = 1
    labels[5:8, 7, 7] = 2
    sampling = ClipSampling(num_frames=4, max_num_objects=2, start="key")
    got = draws(sampling, LabelSource(labels), n=200)
    assert {frames[0] for frames, _ in got} <= {6, 5, 7}
    from_one = [frames for frames, objects in got if frames[0] == 6]
    assert {tuple(f) for f in from_one} == {(6, 7, 8, 9), (6, 5, 4, 3)}
    assert all(1 in objects or 2 in objects for _, objects in got)
    middle = ClipSampling(num_frames=4, start="key", key_slice="middle", max_num_objects=1)
    assert {f[0] for f, o in draws(middle, LabelSource(labels), n=50) if o == [1]} == {5}
    # a key slice from which no run of 11 fits either way is never chosen
    long = ClipSampling(num_frames=11, start="key", max_num_objects=1)
    assert {f[0] for f, _ in draws(long, LabelSource(labels), n=50)} <= {1, 9, 10}
