"""Datamodule for medical volumes (NIfTI files, DICOM series) cut into 2D slices.

Validation data come from their own folders, or else from a seeded split of the training
cases: whole cases go to one side, never single slices, so no patient is seen in both.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from samtune.data.datamodules.base import (
    SamDataModule,
    TransformedDataset,
    collate,
    seed_worker,
    seeded_split,
)
from samtune.data.datasets.videos import ClipSampling, VolumeClipDataset
from samtune.data.datasets.volumes import VolumePair, VolumeSliceDataset, pair_volumes
from samtune.data.datasets.volumes.pairing import VolumePairing
from samtune.data.pairing import read_manifest
from samtune.data.sample import DataError
from samtune.data.samplers import ShardedSampler, rank_seed, replicas_of

PathList = str | Path | Sequence[str | Path]
CaseSplit = tuple[list[VolumePair], list[VolumePair], list[tuple[str, str]]]
Problems = list[tuple[str, str]]


class VolumeGroupSampler(ShardedSampler):
    """Shuffles slices so that each volume is read about once per epoch.

    Each epoch the volumes are shuffled and taken ``group`` at a time; the slices of one
    group are shuffled together and given out before the next group starts. With ``group``
    equal to the dataset's ``cache_volumes`` a loader process reads each volume once per epoch
    (a fully random order would re-read a volume for almost every slice). Epoch ``e`` uses the
    seed ``(seed, e)``, so runs repeat. Iterating moves on to the next epoch; Lightning sets the
    epoch itself before each one (:meth:`set_epoch`).

    With several ranks the epoch's order is split as :class:`ShardedSampler` splits it: each
    rank takes every ``num_replicas``-th slice, so a rank still meets the volumes of one group
    together and reads each about once per epoch.

    Args:
        volume_of: the volume (any hashable name) of each dataset item.
        group: volumes whose slices are mixed together (at least 1).
        seed: seed of the shuffling.
        num_replicas: number of ranks the epoch is split across.
        rank: this process's rank.
        keyed: yield ``(epoch, index)`` pairs (see :class:`ShardedSampler`).
    """

    def __init__(
        self,
        volume_of: Sequence[Any],
        *,
        group: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        keyed: bool = False,
    ) -> None:
        if int(group) < 1:
            raise ValueError(f"group must be >= 1, got {group!r}")
        super().__init__(
            len(volume_of),
            shuffle=True,
            seed=seed,
            num_replicas=num_replicas,
            rank=rank,
            keyed=keyed,
        )
        self.group = int(group)
        self._items: dict[Any, list[int]] = {}
        for index, volume in enumerate(volume_of):
            self._items.setdefault(volume, []).append(index)

    def order(self) -> list[int]:
        """The whole epoch's order: volumes shuffled, then slices shuffled group by group."""
        rng = np.random.default_rng([self.seed, self.epoch])
        volumes = list(self._items)
        shuffled = [volumes[i] for i in rng.permutation(len(volumes))]
        order: list[int] = []
        for start in range(0, len(shuffled), self.group):
            members = [
                i for volume in shuffled[start : start + self.group] for i in self._items[volume]
            ]
            order.extend(members[i] for i in rng.permutation(len(members)))
        return order

    def __iter__(self) -> Iterator[int] | Iterator[tuple[int, int]]:
        indices = super().__iter__()
        self.epoch += 1
        return indices


class VolumeDataModule(SamDataModule):
    """Train/val (and optionally test) slices of paired image and label volumes.

    Every split is a :class:`~samtune.data.datasets.volumes.VolumeSliceDataset` (see it for pairing by
    case name, windowing, label modes and slice selection). Without ``val_images`` and
    ``val_labels`` the training cases are split: ``round(n * val_fraction)`` whole cases (at
    least one when there are two or more) go to val, chosen by ``seed``. Cases left out as bad
    data while pairing are reported under train.

    Training batches come from :class:`VolumeGroupSampler` (``cache_volumes`` volumes mixed at
    a time), so each volume is read about once per epoch. Slices without objects (kept with
    ``empty_slice_rate``) reach the model with no masks; the training step skips them.

    Args:
        images: folder (or list) of training image volumes.
        labels: folder (or list) of training label volumes.
        val_images: folder (or list) of validation image volumes, or None to split by case.
        val_labels: their label volumes (given together with ``val_images``).
        test_images: folder (or list) of test image volumes, or None (no test split).
        test_labels: their label volumes.
        val_fraction: share of the training cases used for val when splitting, in ``[0, 1)``.
        axis: the array axis to slice along (0, 1 or 2; 2 is axial for usual CT/MR).
        window: CT window preset (``abdomen``, ``lung``, ``bone``, ``brain``) or
            ``{"level", "width"}`` in HU; None uses ``normalize``.
        normalize: ``"percentile"`` or a mapping of its fields (MR); None with no window
            means percentile.
        mode: ``"instance"`` (each connected region of a class is an object) or ``"semantic"``
            (one object per class per slice).
        classes: ``{label value: name}``; other values are ignored. None: every nonzero value.
        empty_slice_rate: share of slices without objects kept in the train split.
        val_empty_slice_rate: the same for the val and test splits (0: only slices with objects
            are evaluated; per-volume Dice still scores whole volumes).
        min_area: objects with fewer pixels, at the slice's own resolution, are dropped.
        connectivity: 8 or 4, for instance components.
        cache_volumes: volumes kept in memory per process; also the volumes mixed per group
            of training batches.
        pair_by: ``"name"`` (case name) or ``"pattern"`` (``image_pattern`` and
            ``label_pattern``, e.g. ``{id}_image`` / ``{id}-label``, or regexes with ``(?P<id>)``).
        image_pattern: image name pattern for ``pair_by="pattern"``.
        label_pattern: label name pattern for ``pair_by="pattern"``.
        pairs: a manifest instead of folders: csv / json rows ``image, label[, split]`` (paths
            relative to it) or MSD's ``dataset.json``; rows marked ``val`` / ``test`` make
            those splits, else ``val_fraction`` of the cases is split off.
        image_glob: case folders: ``images`` holds one folder per case, whose image file(s)
            match this glob (``labels`` may be left out).
        label_glob: case folders: the label file(s) of each case; several files are one mask
            per structure, read as classes named after the files.
        channels: case folders with several sequences: one, or up to three mapped to R, G, B,
            by the last word of their file names (``[flair, t1c, t2]``).
        **kwargs: the :class:`SamDataModule` arguments (``image_size`` is required).
    """

    def __init__(
        self,
        *,
        images: PathList | None = None,
        labels: PathList | None = None,
        val_images: PathList | None = None,
        val_labels: PathList | None = None,
        test_images: PathList | None = None,
        test_labels: PathList | None = None,
        val_fraction: float = 0.2,
        axis: int = 2,
        window: str | Mapping[str, Any] | None = None,
        normalize: str | Mapping[str, Any] | None = None,
        mode: str = "instance",
        classes: Mapping[Any, Any] | None = None,
        empty_slice_rate: float = 0.0,
        val_empty_slice_rate: float = 0.0,
        min_area: int = 1,
        connectivity: int = 8,
        cache_volumes: int = 2,
        pair_by: str = "name",
        image_pattern: str | None = None,
        label_pattern: str | None = None,
        pairs: str | Path | None = None,
        image_glob: str | None = None,
        label_glob: str | None = None,
        channels: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pairing = VolumePairing(
            pair_by=pair_by,
            image_pattern=image_pattern,
            label_pattern=label_pattern,
            manifest=None if pairs is None else Path(pairs),
            image_glob=image_glob,
            label_glob=label_glob,
            channels=tuple(str(c) for c in (channels or ())),
        )
        if labels is None and image_glob is not None:
            labels = images  # case folders hold both
        if pairs is None and (images is None or labels is None):
            raise ValueError(
                "give data.images and data.labels (folders or lists of volumes), data.images "
                "with data.image_glob and data.label_glob (case folders), or data.pairs (a "
                "manifest)"
            )
        for name, (a, b) in {
            "val": (val_images, val_labels),
            "test": (test_images, test_labels),
        }.items():
            if (a is None) != (b is None):
                raise ValueError(
                    f"give both {name}_images and {name}_labels, or neither"
                    + (" (to split the training cases)" if name == "val" else "")
                )
        if not 0.0 <= float(val_fraction) < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
        self.sources: dict[str, tuple[PathList, PathList] | None] = {
            "train": None if pairs is not None else (_paths(images), _paths(labels)),
            "val": None if val_images is None else (_paths(val_images), _paths(val_labels)),
            "test": None if test_images is None else (_paths(test_images), _paths(test_labels)),
        }
        self.val_fraction = float(val_fraction)
        self.empty_slice_rates = {
            "train": float(empty_slice_rate),
            "val": float(val_empty_slice_rate),
            "test": float(val_empty_slice_rate),
        }
        self.cache_volumes = int(cache_volumes)
        self.slice_options: dict[str, Any] = {
            "axis": axis,
            "window": _plain(window),
            "normalize": _plain(normalize),
            "mode": mode,
            "classes": _plain(classes),
            "min_area": min_area,
            "connectivity": connectivity,
            "cache_volumes": self.cache_volumes,
        }
        self._case_split: CaseSplit | None = None
        # fail early on bad options (window, mode, classes...) rather than at the first batch
        VolumeSliceDataset(images=[], labels=[], **self.slice_options)

    def make_dataset(self, split: str) -> VolumeSliceDataset:
        """The slices of ``split`` (``"train"``, ``"val"`` or ``"test"``)."""
        pairs, problems = self.split_pairs(split)
        dataset = self._slices(pairs, split=split)
        for file, message in problems:
            dataset.reject(file, message)
        return dataset

    def clip_dataset(
        self, split: str, *, sampling: ClipSampling | None = None
    ) -> VolumeClipDataset:
        """The volumes of ``split`` as clips of their slices along ``axis`` (the same cases,
        windowing, label mode and classes as :meth:`make_dataset`); whole volumes unless a
        ``sampling`` draws clips from them."""
        pairs, problems = self.split_pairs(split)
        dataset = VolumeClipDataset(
            pairs=pairs,
            pairing=self.pairing,
            sampling=sampling,
            seed=self.seed,
            on_error=self.on_error,
            **self.slice_options,
        )
        for file, message in problems:
            dataset.reject(file, message)
        return dataset

    def split_pairs(self, split: str) -> tuple[list[VolumePair], Problems]:
        """``(pairs, problems)`` of ``split``: its own folders, the manifest's rows of that
        split, or the cases of the seeded split by case (with the cases left out while pairing
        as train's problems)."""
        if split not in self.sources:
            raise ValueError(
                f"{type(self).__name__} has the splits 'train', 'val' and 'test', not {split!r}"
            )
        if split == "test" and self.sources["test"] is None:
            if self.pairing.manifest is not None and self._manifest_splits().get("test"):
                return self._manifest_splits()["test"], []
            raise ValueError(f"{type(self).__name__}: no test_images/test_labels given")
        if split != "test" and self.sources["val"] is None:
            train_pairs, val_pairs, problems = self.split_cases()
            return (train_pairs, problems) if split == "train" else (val_pairs, [])
        return self._pair(*self.sources[split])

    def _pair(self, images: PathList, labels: PathList) -> tuple[list[VolumePair], Problems]:
        problems: Problems | None = [] if self.on_error == "skip" else None
        pairs = pair_volumes(images, labels, problems=problems, pairing=self.pairing)
        return pairs, list(problems or [])

    def _manifest_splits(self) -> dict[str | None, list[VolumePair]]:
        if not hasattr(self, "_by_split"):
            _, _, named = read_manifest(self.pairing.manifest)
            if named and self.slice_options["classes"] is None:  # MSD's labels table
                self.slice_options["classes"] = named
            pairs, self._manifest_problems = self._pair(None, None)
            by_split: dict[str | None, list[VolumePair]] = {}
            for pair in pairs:
                by_split.setdefault(pair.split or "train", []).append(pair)
            self._by_split = by_split
        return self._by_split

    def split_cases(self) -> CaseSplit:
        """``(train pairs, val pairs, problems)`` of the split by case (pairing done once).

        Cases a manifest marks ``val`` are the val split; otherwise ``val_fraction`` of the
        cases, chosen by ``seed``. ``problems`` lists ``(file, message)`` of cases left out
        while pairing (``on_error="skip"``; with ``"raise"`` the first one raises
        ``DataError``).
        """
        if self._case_split is None:
            if self.pairing.manifest is not None:
                by_split = self._manifest_splits()
                pairs, problems = by_split.get("train", []), self._manifest_problems
                if by_split.get("val"):
                    self._case_split = (pairs, by_split["val"], list(problems))
                    return self._case_split
            else:
                pairs, problems = self._pair(*self.sources["train"])
            train_idx, val_idx = seeded_split(len(pairs), self.val_fraction, self.seed)
            self._case_split = (
                [pairs[i] for i in train_idx],
                [pairs[i] for i in val_idx],
                list(problems),
            )
        return self._case_split

    def train_dataloader(self) -> DataLoader:
        """Augmented batches of the train split, volumes mixed ``cache_volumes`` at a time.

        Raises:
            DataError: the train split has no slice to learn from.
        """
        dataset = self.raw_dataset("train")
        if len(dataset) == 0:
            images, labels = self.sources["train"] or (self.pairing.manifest, "listed there")
            raise DataError(
                f"no training slices: no slice of the volumes in {images} (labels {labels}) holds "
                f"an object (classes={self.slice_options['classes']}) and empty_slice_rate is "
                f"{self.empty_slice_rate_of('train')}"
            )
        world, rank = replicas_of(self)
        sampler = VolumeGroupSampler(
            [dataset.slice_at(i)[0] for i in range(len(dataset))],
            group=self.cache_volumes,
            seed=self.seed,
            num_replicas=world,
            rank=rank,
            keyed=True,  # augmentations keyed by (seed, epoch, index)
        )
        return DataLoader(
            TransformedDataset(dataset, self.rank_transform(True, rank)),
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate,
            worker_init_fn=seed_worker,
            generator=torch.Generator().manual_seed(rank_seed(self.seed, rank)),
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def empty_slice_rate_of(self, split: str) -> float:
        """The share of slices without objects kept in ``split``."""
        return self.empty_slice_rates[split]

    def _slices(self, pairs: list[VolumePair], *, split: str) -> VolumeSliceDataset:
        return VolumeSliceDataset(
            pairs=pairs,
            pairing=self.pairing,
            empty_slice_rate=self.empty_slice_rates[split],
            seed=self.seed,
            on_error=self.on_error,
            **self.slice_options,
        )


def _paths(source: PathList) -> PathList:
    """A folder stays a path; a list (also a Hydra ListConfig) becomes a list of paths."""
    if isinstance(source, (str, Path)):
        return Path(source)
    return [Path(p) for p in source]


def _plain(value: Any) -> Any:
    """Hydra containers (DictConfig) as plain dicts, so datasets pickle without OmegaConf."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value
