"""Datamodule for Cell Tracking Challenge time-lapse data (see
:mod:`samtune.data.datasets.videos.ctc` for the layout and how tracks and segmentations
combine)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from samtune.data.datamodules.clips import ClipDataModule
from samtune.data.datasets.videos import ClipDataset, CtcDataset


class CtcDataModule(ClipDataModule):
    """Train and val sequences of one CTC dataset folder.

    Args:
        root: the dataset folder (``01``, ``01_GT``, ``02``, ...).
        sequences: training sequences (e.g. ``["01"]``), or None for all.
        val_sequences: validation sequences, or None to split ``val_fraction`` of the training
            sequences off by ``seed``.
        truth: masks of the training clips: ``gold``, ``silver`` or ``gold+silver``.
        val_truth: masks of the val clips (``gold``: scores only against human annotation).
        **kwargs: the :class:`ClipDataModule` arguments.
    """

    def __init__(
        self,
        *,
        root: str | Path,
        sequences: Sequence[str] | None = None,
        val_sequences: Sequence[str] | None = None,
        truth: str = "gold+silver",
        val_truth: str = "gold",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.root = Path(root)
        self.sequences = {
            "train": None if sequences is None else [str(s) for s in sequences],
            "val": None if val_sequences is None else [str(s) for s in val_sequences],
        }
        self.truth = {"train": truth, "val": val_truth}
        CtcDataset.check_truth(truth)
        CtcDataset.check_truth(val_truth)

    def split_off(self, everything: ClipDataset, positions: list[int], split: str) -> ClipDataset:
        """Split-off val sequences are read again with ``val_truth``."""
        if split == "train":
            return super().split_off(everything, positions, split)
        names = [everything.sources[p].name for p in positions]
        return CtcDataset(
            root=self.root, sequences=names, truth=self.truth[split], seed=self.seed,
            on_error=self.on_error,
        )  # fmt: skip

    def own_splits(self) -> tuple[str, ...]:
        """train, and val when its sequences are named."""
        return ("train", "val") if self.sequences["val"] is not None else ("train",)

    def make_clips(self, split: str) -> CtcDataset:
        """The whole sequences of ``split``."""
        return CtcDataset(
            root=self.root,
            sequences=self.sequences[split],
            truth=self.truth[split],
            seed=self.seed,
            on_error=self.on_error,
        )
