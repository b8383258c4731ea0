"""``ClipDataModule``: the Lightning side of clip data, shared by the video, volume and
time-lapse datamodules.

Training batches hold clips drawn as SAM 2's trainer draws them (:class:`ClipSampling`), clip
and augmentation keyed by ``(seed, epoch, index)``. Validation and test loaders give the whole
videos at their own resolution (``{"samples": [Clip | None], "indices"}``, as the image
datamodules give samples: validation is evaluation); ``input_dataloader(split)`` gives them as
model input instead, one video per batch. ``raw_dataset(split)`` is the clip dataset itself.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from samtune.data.clip_transforms import ClipTransform
from samtune.data.datamodules.base import SamDataModule, seed_worker, seeded_split
from samtune.data.datasets.videos import ClipDataset, ClipSampling
from samtune.data.sample import DataError
from samtune.data.samplers import ShardedSampler, rank_seed, replicas_of


def collate_clips(items: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Batch transformed clips; ``None`` items (skipped videos) are left out.

    Returns:
        ``{"frames": B x T x 3 x S x S, "masks": [N_b x T x S x S bool], "object_ids": [N_b],
        "class_ids": [N_b], "annotated": B x T bool, "meta": [dict], "indices": B int64,
        "epochs": B int64}``, or None when no item is left.

    Raises:
        DataError: clips of different lengths in one batch (naming them).
    """
    kept = [item for item in items if item is not None]
    if not kept:
        return None
    lengths = {int(item["frames"].shape[0]) for item in kept}
    if len(lengths) > 1:
        names = [item["meta"].get("clip_id", item["meta"].get("file")) for item in kept]
        raise DataError(
            f"clips of {sorted(lengths)} frames in one batch ({names}); whole videos differ in "
            "length, so evaluation batches hold one clip each"
        )
    return {
        "frames": torch.stack([item["frames"] for item in kept]),
        "masks": [item["masks"] for item in kept],
        "object_ids": [item["object_ids"] for item in kept],
        "class_ids": [item["class_ids"] for item in kept],
        "annotated": torch.stack([item["annotated"] for item in kept]),
        "meta": [item["meta"] for item in kept],
        "indices": torch.tensor([int(item["index"]) for item in kept], dtype=torch.int64),
        "epochs": torch.tensor([int(item["epoch"]) for item in kept], dtype=torch.int64),
    }


class TransformedClips(Dataset):
    """A clip dataset seen through a :class:`ClipTransform`; keys are ``index`` or
    ``(epoch, index)``, and each item carries both."""

    def __init__(self, clips: ClipDataset, transform: ClipTransform) -> None:
        self.clips = clips
        self.transform = transform

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any] | None:
        epoch, index = (0, key) if not isinstance(key, (tuple, list)) else key
        epoch, index = int(epoch), int(index)
        clip = self.clips[(epoch, index)]
        if clip is None:
            return None
        return {**self.transform(clip, key=(epoch, index)), "index": index, "epoch": epoch}


class ClipDataModule(SamDataModule):
    """Base of the clip datamodules: subclasses say how to build each split's
    :class:`ClipDataset` of whole videos (:meth:`make_clips`); the train split then draws
    clips with the sampling below.

    Args:
        num_frames: frames per training clip.
        stride: every ``stride``-th frame.
        max_num_objects: objects per training clip (those on its first frame).
        reverse_time_prob: probability of a training clip played backwards.
        start: ``"random"`` (SAM 2's sampler) or ``"key"`` (start at a key slice).
        key_slice: ``"largest"``, ``"middle"`` or ``"random"`` (``start="key"``).
        repeats: training clips per video per epoch (SAM 2's ``multiplier``).
        val_fraction: share of the videos split off for val when the data has no val split.
        batch_size: clips per training batch (SAM 2 trains with 1); evaluation takes 1.
        **kwargs: the :class:`SamDataModule` arguments.
    """

    def __init__(
        self,
        *,
        num_frames: int = 8,
        stride: int = 1,
        max_num_objects: int = 3,
        reverse_time_prob: float = 0.0,
        start: str = "random",
        key_slice: str = "largest",
        repeats: int = 1,
        val_fraction: float = 0.2,
        batch_size: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(batch_size=batch_size, **kwargs)
        self.sampling = ClipSampling(
            num_frames=num_frames,
            stride=stride,
            max_num_objects=max_num_objects,
            reverse_time_prob=reverse_time_prob,
            start=start,
            key_slice=key_slice,
        )
        self.repeats = int(repeats)
        if not 0.0 <= float(val_fraction) < 1.0:
            raise ValueError(f"data.val_fraction must be in [0, 1), got {val_fraction!r}")
        self.val_fraction = float(val_fraction)
        self._split_off: tuple[ClipDataset, list[int], list[int]] | None = None

    def make_clips(self, split: str) -> ClipDataset:
        """The whole videos of ``split``, one of :meth:`own_splits`."""
        raise NotImplementedError

    def own_splits(self) -> tuple[str, ...]:
        """The splits the data defines itself; without ``"val"`` it is split off train."""
        return ("train",)

    def make_dataset(self, split: str) -> ClipDataset:
        """The clips of ``split``: drawn clips for train, whole videos otherwise."""
        own = self.own_splits()
        if split not in own and split != "val":
            raise ValueError(
                f"{type(self).__name__}: no {split!r} split in this data (splits: "
                f"{sorted(set(own) | {'val'})})"
            )
        if split in own and (split != "train" or "val" in own):
            clips = self.make_clips(split)
        else:  # train and val, the val videos split off the training ones
            everything, train, val = self._split()
            clips = self.split_off(everything, train if split == "train" else val, split)
            if split == "val":
                clips.empty_note = (
                    f"it is split off the training videos (data.val_fraction="
                    f"{self.val_fraction:g}), which hold {len(everything.sources)} video(s)"
                )
        if split == "train":
            clips = clips.with_sampling(self.sampling)
            clips.repeats = self.repeats
        return clips

    def split_off(self, everything: ClipDataset, positions: list[int], split: str) -> ClipDataset:
        """The videos at ``positions`` of the training data as ``split`` (train keeps the bad
        files found while indexing, so they are reported once)."""
        return everything.subset(positions, keep_rejects=split == "train")

    def _split(self) -> tuple[ClipDataset, list[int], list[int]]:
        if self._split_off is None:
            everything = self.make_clips("train")
            train, val = seeded_split(len(everything.sources), self.val_fraction, self.seed)
            self._split_off = (everything, train, val)
        return self._split_off

    def transform(self, *, train: bool) -> ClipTransform:
        """The clip transform of the training (augmenting) or evaluation loaders."""
        return ClipTransform(
            image_size=self.image_size,
            train=train,
            augment=self.augment if train else None,
            min_object_area=self.min_object_area,
            seed=self.seed,
        )

    def _loader(self, split: str, *, train: bool) -> DataLoader:
        world, rank = replicas_of(self)
        dataset = TransformedClips(self.nonempty_dataset(split), self.rank_transform(train, rank))
        sampler = ShardedSampler(
            len(dataset),
            shuffle=train,
            seed=self.seed,
            num_replicas=world,
            rank=rank,
            pad=train,
            keyed=True,  # clips and their augmentation drawn by (seed, epoch, index)
        )
        batch_size = self.batch_size if train else 1
        position = getattr(self, "_resume_position", None)
        if train and position is not None:  # a resumed run continues the epoch where it stopped
            sampler.resume_at(position[0], position[1] * batch_size)
            self._resume_position = None
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate_clips,
            worker_init_fn=seed_worker,
            generator=torch.Generator().manual_seed(rank_seed(self.seed, rank)),
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def summary(self) -> str:
        """Counts per split (videos, frames, annotated frames, left out, skipped)."""
        skipped = self.skipped_files()
        lines = [f"{type(self).__name__} at {self.image_size}x{self.image_size} px"]
        for split in ("train", "val", "test"):
            if split not in self._datasets:
                continue
            stats = self._datasets[split].stats
            lines.append(
                f"  {split}: {stats['videos']} videos, {stats['frames']} frames "
                f"({stats['annotated_frames']} annotated), {stats['images']} clips per epoch | "
                f"left out: {stats['too_short']} too short, {stats['without_annotations']} "
                f"without annotations | skipped (bad data): {len(skipped.get(split, []))}"
            )
        for split, files in skipped.items():
            for file, reason in files:
                lines.append(f"  skipped ({split}) {file}: {reason}")
        return "\n".join(lines)
