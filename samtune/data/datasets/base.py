"""What every samtune dataset shares: the ``on_error`` policy, skip records and counts."""

from __future__ import annotations

import warnings
from typing import Any

from torch.utils.data import Dataset

from samtune.data.sample import DataError, Sample, as_ignore
from samtune.data.skiplog import append_skip

ON_ERROR_CHOICES = ("raise", "skip")
STAT_KEYS = ("images", "objects", "dropped_empty", "dropped_small", "dropped_images", "skipped")


class DataSkipWarning(UserWarning):
    """An image was left out because of bad data (``on_error="skip"``)."""


class SampleDataset(Dataset):
    """Base of the datasets: ``dataset[i]`` is a :class:`Sample`, or ``None`` for a skipped image.

    Subclasses implement ``__len__``, :meth:`file_of` and :meth:`load`, call :meth:`reject` for
    an image found bad while indexing (construction time), and fill ``self.counts``.

    Attributes:
        on_error: ``"raise"`` (a :class:`DataError` naming the file) or ``"skip"`` (the image is left
            out with a warning and recorded).
        skipped: ``(file, reason)`` of every image skipped in this process.
        skip_log: path of a JSON-lines file every skip is appended to (also from DataLoader
            workers), or None. Set by the datamodule.
        split: label written into the skip log (``"train"``, ``"val"``...), or None.
        counts: the numbers behind :attr:`stats`.
        ignore_masks: a :class:`~samtune.data.datasets.ignore_masks.IgnoreMasks` folder whose
            masks are added to each sample's ignore mask, or None (see
            :meth:`attach_ignore_masks`).
    """

    accepts_ignore_masks = True  # False where items are no single 2-D images (clips, slices)

    def __init__(self, *, on_error: str = "raise", min_area: int = 1) -> None:
        if on_error not in ON_ERROR_CHOICES:
            raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
        if int(min_area) != min_area or min_area < 0:
            raise ValueError(f"min_area must be a whole number of pixels >= 0, got {min_area!r}")
        self.on_error = on_error
        self.min_area = int(min_area)
        self.skipped: list[tuple[str, str]] = []
        self.skip_log: str | None = None
        self.split: str | None = None
        self.counts: dict[str, int] = {key: 0 for key in STAT_KEYS if key != "skipped"}
        self.ignore_masks: Any = None

    def __len__(self) -> int:
        raise NotImplementedError

    def file_of(self, index: int) -> str:
        """Path of the image at ``index`` (for messages)."""
        raise NotImplementedError

    def load(self, index: int) -> Sample:
        """Read item ``index``; bad data raises :class:`DataError` naming the file."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample | None:
        if index < 0 or index >= len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} images")
        try:
            sample = self.load(index)
            if self.ignore_masks is not None:
                sample = self._add_ignore_mask(sample, index)
            return sample
        except DataError as err:
            if self.on_error == "raise":
                raise
            self.record_skip(self.file_of(index), str(err), stage="load")
            return None

    def attach_ignore_masks(self, masks: Any, *, split: str | None = None) -> None:
        """Add the masks of an ignore-mask folder (``data.ignore_masks``) to every sample.

        Each image is paired with its mask by file stem when this is called; images without
        one are counted in ``stats["without_ignore_mask"]``.

        Args:
            masks: an :class:`~samtune.data.datasets.ignore_masks.IgnoreMasks`.
            split: the split's name, for messages.

        Raises:
            ValueError: the dataset's items are not single 2-D images.
            DataError: no image of the dataset has a mask in the folder.
        """
        if not self.accepts_ignore_masks:
            raise ValueError(
                f"data.ignore_masks applies to 2-D image datasets, not to {type(self).__name__}"
            )
        files = [self.file_of(i) for i in range(len(self))]
        self.counts["without_ignore_mask"] = masks.check_paired(files, split=split)
        self.ignore_masks = masks

    def _add_ignore_mask(self, sample: Sample, index: int) -> Sample:
        file = self.file_of(index)
        region = self.ignore_masks.read(file, sample.image.shape[:2])
        if region is None:
            return sample
        if sample.ignore is not None:
            region = region | sample.ignore
        sample.ignore = as_ignore(region, sample.image.shape[:2], sample.masks, file)
        return sample

    @property
    def stats(self) -> dict[str, Any]:
        """Counts: ``images`` (kept), ``objects`` (kept), ``dropped_empty`` (masks with no pixel),
        ``dropped_small`` (masks below ``min_area``), ``dropped_images`` (images left without
        objects), ``skipped`` (images left out for bad data in this process), and any
        dataset-specific extras."""
        return {**self.counts, "skipped": len(self.skipped)}

    def reject(self, file: str, message: str) -> None:
        """Apply the ``on_error`` policy to an image found bad while indexing.

        Raises:
            DataError: ``message`` when ``on_error="raise"``.
        """
        if self.on_error == "raise":
            raise DataError(message)
        self.record_skip(file, message, stage="index")

    def record_skip(self, file: str, reason: str, *, stage: str) -> None:
        """Warn, remember ``(file, reason)`` and append it to the skip log if there is one."""
        warnings.warn(f"skipping {file}: {reason}", DataSkipWarning, stacklevel=3)
        self.skipped.append((str(file), reason))
        if self.skip_log is not None:
            append_skip(self.skip_log, split=self.split, file=str(file), reason=reason, stage=stage)
