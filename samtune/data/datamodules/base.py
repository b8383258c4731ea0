"""``SamDataModule``: the Lightning side of the data, shared by every dataset's datamodule."""

from __future__ import annotations

import os
import tempfile
import weakref
from collections.abc import Mapping
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from samtune.data.datasets.ignore_masks import IgnoreMasks
from samtune.data.drops import EmptySplitError, empty_split_message
from samtune.data.sample import Sample
from samtune.data.samplers import ShardedSampler, rank_seed, replicas_of
from samtune.data.skiplog import append_skip, read_skips
from samtune.data.transforms import SamTransform, augment_settings
from samtune.devices import resolve_num_workers
from samtune.validation import check_choice, check_number

SPLITS = ("train", "val", "test")


def collate(items: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Batch transformed items; ``None`` items (skipped images) are left out.

    Returns:
        ``{"images": B x 3 x S x S, "masks": [N_i x S x S bool], "class_ids": [N_i int64],
        "meta": [dict]}``, plus ``"ignore"`` (B x S x S bool, True where a pixel is not
        labelled) when any item has an ignore mask, plus ``"indices"`` (B int64, each item's index in its dataset) when
        the items carry an ``"index"``; or None when no item is left.
    """
    kept = [item for item in items if item is not None]
    if not kept:
        return None
    batch = {
        "images": torch.stack([item["image"] for item in kept]),
        "masks": [item["masks"] for item in kept],
        "class_ids": [item["class_ids"] for item in kept],
        "meta": [item["meta"] for item in kept],
    }
    if any(item.get("ignore") is not None for item in kept):
        size = kept[0]["image"].shape[-2:]
        batch["ignore"] = torch.stack(
            [
                item["ignore"]
                if item.get("ignore") is not None
                else torch.zeros(size, dtype=torch.bool)
                for item in kept
            ]
        )
    if all("index" in item for item in kept):
        batch["indices"] = torch.tensor([int(item["index"]) for item in kept], dtype=torch.int64)
    return batch


def collate_samples(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch original-resolution samples for validation: ``{"samples": [Sample | None],
    "indices": B int64}``; a None sample is an image the dataset skipped (it stays in the list,
    so validation counts it as the evaluator does)."""
    return {
        "samples": [item["sample"] for item in items],
        "indices": torch.tensor([int(item["index"]) for item in items], dtype=torch.int64),
    }


class IndexedSamples(Dataset):
    """A Sample dataset as ``{"sample": Sample | None, "index": i}`` items (no transform)."""

    def __init__(self, samples: Dataset[Sample | None]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"sample": self.samples[index], "index": int(index)}


class TransformedDataset(Dataset):
    """A Sample dataset seen through a :class:`SamTransform`; skipped images stay ``None``.

    Each item also carries its ``"index"`` in the dataset: the training step keys the random
    prompts of an image by it, so they do not depend on which batch or rank the image lands in.
    An item asked for by ``(epoch, index)`` (what a keyed :class:`ShardedSampler` yields) has its
    augmentation keyed the same way.
    """

    def __init__(self, samples: Dataset[Sample | None], transform: SamTransform) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any] | None:
        key = None
        if isinstance(item, tuple):
            key = (int(item[0]), int(item[1]))
            index = key[1]
        else:
            index = int(item)
        sample = self.samples[index]
        if sample is None:
            return None
        return {**self.transform(sample, key=key), "index": index}


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: give each worker its own augmentation stream.

    The seed is the one torch derives for the worker from the loader's generator, so runs with
    the same datamodule ``seed`` augment the same way.
    """
    info = get_worker_info()
    if info is None:
        return
    transform = getattr(info.dataset, "transform", None)
    if isinstance(transform, SamTransform):
        transform.reseed(info.seed % 2**32)


def seeded_split(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded random ``(train, val)`` indices of ``n`` items.

    ``round(n * fraction)`` items go to val, but at least one and at most ``n - 1`` when
    ``fraction > 0`` and ``n >= 2``. Both lists are sorted.

    Raises:
        ValueError: ``fraction`` outside ``[0, 1)``.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {fraction!r}")
    n_val = int(round(n * fraction))
    if fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


class SamDataModule(L.LightningDataModule):
    """Base datamodule: subclasses only say how to build each split's Sample dataset.

    Subclasses implement :meth:`make_dataset` for ``"train"`` and ``"val"`` (and may for
    ``"test"``). Bad data follows ``on_error``; with ``"skip"`` every skip, including those in
    DataLoader workers, is appended to ``skip_log`` (a private temporary file when None is
    given), so :meth:`summary` and :meth:`skipped_files` count them in the main process.

    Args:
        image_size: side of the square model input.
        batch_size: images per batch.
        num_workers: DataLoader worker processes (0: load in the main process), or ``auto``
            (:func:`samtune.devices.auto_num_workers`).
        augment: training augmentation probabilities (see :class:`SamTransform`), or None.
        min_object_area: smallest object kept after resizing, in pixels at ``image_size``.
        on_error: ``"raise"`` or ``"skip"``, passed to the datasets.
        skip_log: JSON-lines file skips are appended to, or None.
        seed: seed of the shuffling, the augmentation and of any random split.
        ignore_masks: a folder of masks paired with the images by file stem whose non-zero
            pixels are "not labelled" (a field of view: neither supervised nor scored), for
            2-D image datasets; or None (see :mod:`samtune.data.datasets.ignore_masks`).
    """

    def __init__(
        self,
        *,
        image_size: int,
        batch_size: int = 2,
        num_workers: int | str = 0,
        augment: Mapping[str, Any] | None = None,
        min_object_area: int = 4,
        on_error: str = "raise",
        skip_log: str | None = None,
        seed: int = 0,
        ignore_masks: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        self.image_size = check_number("data.image_size", image_size, ge=1, integer=True)
        self.batch_size = check_number("data.batch_size", batch_size, ge=1, integer=True)
        self.num_workers = resolve_num_workers(num_workers)
        self.augment = augment_settings(augment)
        self.min_object_area = check_number(
            "data.min_object_area", min_object_area, ge=0, integer=True
        )
        self.on_error = check_choice("data.on_error", on_error, ("raise", "skip"))
        self.seed = check_number("data.seed", seed, integer=True)
        self.skip_log = str(skip_log) if skip_log is not None else None
        self.ignore_masks = None if ignore_masks is None else IgnoreMasks(ignore_masks)
        if self.skip_log is None and on_error == "skip":
            handle, path = tempfile.mkstemp(prefix="samtune-skips-", suffix=".jsonl")
            os.close(handle)
            self.skip_log = path
            weakref.finalize(self, _remove_file, path)
        self._datasets: dict[str, Dataset[Sample | None]] = {}
        SamTransform(image_size=self.image_size, train=True, augment=self.augment)  # fail early

    def make_dataset(self, split: str) -> Dataset[Sample | None]:
        """The Sample dataset of ``split`` (``"train"``, ``"val"``, maybe ``"test"``)."""
        raise NotImplementedError(f"{type(self).__name__} has no {split!r} split")

    def raw_dataset(self, split: str) -> Dataset[Sample | None]:
        """The Sample dataset of ``split`` at original resolution (built once, then cached).

        With ``on_error="skip"`` items of skipped images are None.
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if split not in self._datasets:
            dataset = self.make_dataset(split)
            if self.ignore_masks is not None:
                if not hasattr(dataset, "attach_ignore_masks"):
                    raise ValueError(
                        f"data.ignore_masks applies to 2-D image datasets, not to "
                        f"{type(dataset).__name__}"
                    )
                dataset.attach_ignore_masks(self.ignore_masks, split=split)
            if hasattr(dataset, "skipped"):
                dataset.split = split
                dataset.skip_log = self.skip_log
                if self.skip_log is not None:
                    for file, reason in dataset.skipped:
                        append_skip(
                            self.skip_log, split=split, file=file, reason=reason, stage="index"
                        )
            self._datasets[split] = dataset
        return self._datasets[split]

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets a Lightning stage needs (all of train and val when ``stage`` is None)."""
        needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ()}
        for split in needed.get(stage or "fit", ("train", "val")):
            self.raw_dataset(split)

    def transform(self, *, train: bool) -> SamTransform:
        """The transform of the training (augmenting) or evaluation loaders."""
        return SamTransform(
            image_size=self.image_size,
            train=train,
            augment=self.augment if train else None,
            min_object_area=self.min_object_area,
            seed=self.seed,
        )

    def rank_transform(self, train: bool, rank: int) -> SamTransform:
        """:meth:`transform` with the augmentation stream of DDP rank ``rank`` (see
        :func:`~samtune.data.samplers.rank_seed`)."""
        transform = self.transform(train=train)
        if rank:
            transform.reseed(rank_seed(self.seed, rank))
        return transform

    def train_dataloader(self) -> DataLoader:
        """Shuffled, augmented batches of the train split.

        Raises:
            EmptySplitError: the split holds no image, naming the split and why (every
                loader does the same).
        """
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        """Batches of the val split's samples at their original resolution, in order.

        Validation scores them with the evaluator's own code (``samtune-eval``'s protocols,
        preprocessing and resolution), so each batch is ``{"samples": [Sample | None],
        "indices": ...}`` (:func:`collate_samples`), not model input.
        """
        return self._sample_loader("val")

    def test_dataloader(self) -> DataLoader:
        """Batches of the test split's samples at their original resolution, in order."""
        return self._sample_loader("test")

    def input_dataloader(self, split: str) -> DataLoader:
        """Batches of ``split`` as model input (resized, normalised; augmented for ``train``),
        as :meth:`train_dataloader` makes them."""
        return self._loader(split, train=split == "train")

    def _sample_loader(self, split: str) -> DataLoader:
        world, rank = replicas_of(self)
        dataset = IndexedSamples(self.nonempty_dataset(split))
        # in order, each item on exactly one rank (the metrics are summed over ranks)
        sampler = ShardedSampler(
            len(dataset), shuffle=False, seed=self.seed, num_replicas=world, rank=rank, pad=False
        )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate_samples,
            persistent_workers=self.num_workers > 0,
        )

    def nonempty_dataset(self, split: str) -> Dataset[Sample | None]:
        """:meth:`raw_dataset`, checked to hold at least one image (for training or evaluating).

        Raises:
            EmptySplitError: naming the split, its source and why it is empty (all masks
                empty, no annotation, every file bad...).
        """
        raw = self.raw_dataset(split)
        if len(raw) == 0:
            stats = dict(getattr(raw, "stats", {}))
            stats["skipped"] = len(self.skipped_files().get(split, []))
            source = getattr(raw, "ann_file", None) or getattr(raw, "images_dir", None)
            raise EmptySplitError(
                empty_split_message(
                    split,
                    stats,
                    source=str(source or type(self).__name__),
                    note=getattr(raw, "empty_note", None),
                )
            )
        return raw

    def state_dict(self) -> dict[str, Any]:
        """Where training stands in the data (saved in checkpoints): epoch and batches done in it."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return {}
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {"epoch": int(trainer.current_epoch), "batches_done": int(done)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the training order where a checkpoint left it (see :meth:`state_dict`)."""
        self._resume_position = (
            (int(state_dict["epoch"]), int(state_dict["batches_done"])) if state_dict else None
        )

    def _loader(self, split: str, *, train: bool) -> DataLoader:
        world, rank = replicas_of(self)
        dataset = TransformedDataset(self.nonempty_dataset(split), self.rank_transform(train, rank))
        generator = torch.Generator().manual_seed(rank_seed(self.seed, rank))
        # Training: shuffled by (seed, epoch), padded so every rank takes the same number of
        # steps. Evaluation: in order, each item on exactly one rank.
        sampler = ShardedSampler(
            len(dataset),
            shuffle=train,
            seed=self.seed,
            num_replicas=world,
            rank=rank,
            pad=train,
            keyed=train,  # augmentations keyed by (seed, epoch, index)
        )
        position = getattr(self, "_resume_position", None)
        if train and position is not None:  # a resumed run continues the epoch where it stopped
            sampler.resume_at(position[0], position[1] * self.batch_size)
            self._resume_position = None
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate,
            worker_init_fn=seed_worker,
            generator=generator,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def skipped_files(self) -> dict[str, list[tuple[str, str]]]:
        """``(file, reason)`` of every image skipped so far per split, each file once.

        Reads the skip log, so skips inside DataLoader workers are included.
        """
        found: dict[str, dict[str, str]] = {}
        for split, dataset in self._datasets.items():
            for file, reason in getattr(dataset, "skipped", []):
                found.setdefault(split, {}).setdefault(file, reason)
        for record in read_skips(self.skip_log):
            split = record.get("split") or "?"
            found.setdefault(split, {}).setdefault(
                str(record.get("file")), str(record.get("reason"))
            )
        return {split: sorted(files.items()) for split, files in found.items()}

    def summary(self) -> str:
        """Counts per split (images, objects, dropped, skipped) for the end-of-run screen."""
        skipped = self.skipped_files()
        lines = [f"{type(self).__name__} at {self.image_size}x{self.image_size} px"]
        for split in SPLITS:
            if split not in self._datasets:
                continue
            dataset = self._datasets[split]
            stats = dict(getattr(dataset, "stats", {"images": len(dataset)}))
            stats["skipped"] = len(skipped.get(split, []))
            extra = ", ".join(
                f"{key} {value}" for key, value in stats.items() if key not in _MAIN_STATS
            )
            line = (
                f"  {split}: {stats.get('images', len(dataset))} images, {stats.get('objects', '?')} objects"
                f" | dropped: {stats.get('dropped_empty', 0)} empty masks, "
                f"{stats.get('dropped_small', 0)} small masks, {stats.get('dropped_images', 0)} images "
                f"without objects | skipped (bad data): {stats['skipped']} images"
            )
            lines.append(line + (f" | {extra}" if extra else ""))
        for split, files in skipped.items():
            for file, reason in files:
                lines.append(f"  skipped ({split}) {file}: {reason}")
        return "\n".join(lines)


_MAIN_STATS = ("images", "objects", "dropped_empty", "dropped_small", "dropped_images", "skipped")


def _remove_file(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
