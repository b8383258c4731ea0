"""Time-lapse microscopy in the Cell Tracking Challenge layout, as clips.

Layout (``root`` holds one or more sequences, ``01``, ``02``...)::

    root/01/t000.tif ...                     the frames (2D, 8 or 16 bit)
    root/01_GT/TRA/man_track000.tif ...      track markers on every frame: value = track id
    root/01_GT/TRA/man_track.txt             lineage: "L B E P" (track, first, last frame, parent)
    root/01_GT/SEG/man_seg000.tif ...        gold segmentations, on some frames only
    root/01_ST/SEG/man_seg000.tif ...        silver segmentations (when shipped), most frames

How identities and masks combine: CTC's SEG labels are numbered per frame (the same cell has
different values on different frames), so they cannot carry identities; the TRA markers can.
The objects of a sequence are its TRA track ids. On a frame with a segmentation (``truth``:
gold SEG, silver ST, or ``gold+silver``: gold where it exists, else silver) each segment takes
the track id of the marker it overlaps most, provided more than half of that marker lies inside
the segment (CTC's own matching rule, with the marker as reference). A segment matching no marker
is left out (``untracked_segments``); a marker whose cell is not segmented on that frame (CTC's
gold SEG may be partial) keeps its marker as its mask, so the cell is not called absent
(``marker_masks`` in ``meta`` lists those ``(track, frame)``). Frames with no segmentation are
not annotated. ``meta["tracks"]`` holds ``man_track.txt``: ``{track: [first, last, parent]}``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from samtune.data.datasets.videos.base import ClipDataset
from samtune.data.datasets.videos.frame_folders import natural_key
from samtune.data.datasets.videos.sampling import ClipSampling
from samtune.data.datasets.videos.source import VideoSource, stack_frames
from samtune.data.io import read_image, read_label_map, read_size
from samtune.data.sample import DataError
from samtune.validation import check_choice

TRUTHS = ("gold", "silver", "gold+silver")
FRAME = re.compile(r"^t(\d+)\.tiff?$")
TRACK = re.compile(r"^man_track(\d+)\.tiff?$")
SEG = re.compile(r"^man_seg(\d+)\.tiff?$")
SEG_3D = re.compile(r"^man_seg_(\d+)_(\d+)\.tiff?$")


def numbered(folder: Path, pattern: re.Pattern[str]) -> dict[int, Path]:
    """``{frame number: file}`` of the files in ``folder`` whose name matches ``pattern``."""
    if not folder.is_dir():
        return {}
    found = {}
    for path in folder.iterdir():
        match = pattern.match(path.name)
        if match:
            found[int(match.group(1))] = path
    return found


def read_lineage(path: Path) -> dict[int, list[int]]:
    """``{track: [first frame, last frame, parent]}`` from ``man_track.txt`` (parent 0: none).

    Raises:
        DataError: a line that is not four whole numbers (naming the file and line).
    """
    tracks: dict[int, list[int]] = {}
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            label, first, last, parent = (int(v) for v in line.split())
        except ValueError:
            raise DataError(
                f"{path}: line {n} is {line!r}, expected four whole numbers 'L B E P'"
            ) from None
        tracks[label] = [first, last, parent]
    return tracks


def match_segments(seg: np.ndarray, tra: np.ndarray) -> tuple[np.ndarray, int, list[int]]:
    """Give each segment of ``seg`` the track id of its marker in ``tra`` (see the module
    docstring).

    Returns:
        ``(object-id map, untracked segments, tracks whose mask is their marker)``.
    """
    out = np.zeros(seg.shape, dtype=np.int64)
    both = (seg > 0) & (tra > 0)
    marker_area = dict(zip(*np.unique(tra[tra > 0], return_counts=True)))
    best: dict[int, tuple[int, int]] = {}
    if both.any():
        pairs, counts = np.unique(
            np.stack([seg[both], tra[both]]).astype(np.int64), axis=1, return_counts=True
        )
        for (s, t), c in zip(pairs.T.tolist(), counts.tolist()):
            if c > best.get(s, (0, 0))[1]:
                best[s] = (t, c)
    segments = [int(s) for s in np.unique(seg) if s != 0]
    untracked = 0
    for s in segments:
        track, overlap = best.get(s, (0, 0))
        if track and 2 * overlap > marker_area[track]:
            out[seg == s] = track
        else:
            untracked += 1
    matched = set(np.unique(out).tolist())
    from_markers = []
    for track in sorted(int(t) for t in marker_area):
        if track not in matched:
            out[(tra == track) & (out == 0)] = track
            from_markers.append(track)
    return out, untracked, from_markers


class CtcSequence(VideoSource):
    """One CTC sequence (see the module docstring)."""

    def __init__(
        self,
        *,
        name: str,
        frames: dict[int, Path],
        tracks: dict[int, Path],
        segmentations: dict[int, Path],
        lineage: dict[int, list[int]],
        sources: dict[int, str],
    ) -> None:
        super().__init__()
        self.name = name
        self.numbers = sorted(frames)
        self.frame_files = [frames[n] for n in self.numbers]
        self.file = str(self.frame_files[0].parent)
        self.num_frames = len(self.numbers)
        self.track_files = [tracks.get(n) for n in self.numbers]
        self.seg_files = [segmentations.get(n) for n in self.numbers]
        self.truth_of = [sources.get(n) for n in self.numbers]
        self.lineage = lineage
        self.annotated = np.array(
            [s is not None and t is not None for s, t in zip(self.seg_files, self.track_files)],
            dtype=bool,
        )
        self.untracked: dict[int, int] = {}
        self.from_markers: dict[int, list[int]] = {}

    def read_frames(self, indices: Sequence[int]) -> np.ndarray:
        """The frames as uint8 RGB (16-bit rescaled per frame, as ``read_image`` does)."""
        files = [self.frame_files[int(t)] for t in indices]
        return stack_frames([read_image(f) for f in files], files)

    def read_labels(self, indices: Sequence[int]) -> np.ndarray:
        """Track-id maps of the segmentations (0 on frames without one)."""
        size = read_size(self.frame_files[int(indices[0])])
        maps = []
        for t in (int(i) for i in indices):
            if not self.annotated[t]:
                maps.append(np.zeros(size, dtype=np.int64))
                continue
            seg = read_label_map(self.seg_files[t])
            tra = read_label_map(self.track_files[t])
            for path, array in ((self.seg_files[t], seg), (self.track_files[t], tra)):
                if array.shape != size:
                    raise DataError(
                        f"{path}: {array.shape[0]}x{array.shape[1]} (HxW) but the frames of "
                        f"{self.file} are {size[0]}x{size[1]}"
                    )
            labels, untracked, from_markers = match_segments(seg, tra)
            self.untracked[t], self.from_markers[t] = untracked, from_markers
            maps.append(labels)
        return np.stack(maps)

    def meta(self) -> dict[str, Any]:
        """``file`` (the frames folder), ``video``, ``class_names`` and ``tracks`` (the lineage)."""
        return {
            **super().meta(),
            "class_names": {1: "cell"},
            "tracks": {int(k): v for k, v in self.lineage.items()},
        }

    def frame_meta(self, indices: Sequence[int]) -> dict[str, Any]:
        """``frame_indices``, ``frame_files``, ``frame_numbers`` (CTC's ``t``), ``truth`` per
        frame (``gold``, ``silver`` or None), ``marker_masks`` and ``untracked_segments``."""
        positions = [int(t) for t in indices]
        return {
            "frame_indices": positions,
            "frame_files": [self.frame_files[t].name for t in positions],
            "frame_numbers": [self.numbers[t] for t in positions],
            "truth": [self.truth_of[t] if self.annotated[t] else None for t in positions],
            "marker_masks": [
                [track, i]
                for i, t in enumerate(positions)
                for track in self.from_markers.get(t, [])
            ],
            "untracked_segments": int(sum(self.untracked.get(t, 0) for t in positions)),
        }


class CtcDataset(ClipDataset):
    """The sequences of a Cell Tracking Challenge dataset folder as clips.

    Args:
        root: the dataset folder (holding ``01``, ``01_GT``, ...).
        sequences: the sequences to read (e.g. ``["01"]``), or None for every one with a
            ``_GT`` (or ``_ST``) folder.
        truth: ``"gold"`` (``_GT/SEG``), ``"silver"`` (``_ST/SEG``) or ``"gold+silver"``.
        **kwargs: the :class:`ClipDataset` arguments.

    Raises:
        DataError: no such folder or sequence, or (``on_error="raise"``) a bad sequence: no
            frames, no TRA markers, a 3D dataset, an unreadable ``man_track.txt``.
    """

    def __init__(
        self,
        *,
        root: str | Path,
        sequences: Sequence[str] | None = None,
        truth: str = "gold+silver",
        sampling: ClipSampling | None = None,
        seed: int = 0,
        repeats: int = 1,
        on_error: str = "raise",
    ) -> None:
        super().__init__(sampling=sampling, seed=seed, repeats=repeats, on_error=on_error)
        self.root = Path(root)
        self.truth = self.check_truth(truth)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: no such folder (data.root)")
        found = sorted(
            (
                p.name
                for p in self.root.iterdir()
                if p.is_dir()
                and not p.name.endswith(("_GT", "_ST"))
                and any((self.root / f"{p.name}{s}").is_dir() for s in ("_GT", "_ST"))
            ),
            key=lambda n: natural_key(Path(n)),
        )
        names = [str(s) for s in sequences] if sequences is not None else found
        for name in names:
            if name not in found:
                raise DataError(
                    f"{self.root / name}: no CTC sequence {name!r} (a folder with frames and a "
                    f"{name}_GT folder beside it); sequences here: {found}"
                )
            sequence = self._sequence(name)
            if sequence is not None:
                self.add_source(sequence)
        if not names:
            self.empty_note = f"no sequence folder with a _GT folder beside it in {self.root}"

    @staticmethod
    def check_truth(truth: str) -> str:
        """``truth`` if it is ``gold``, ``silver`` or ``gold+silver``; else ``ValueError``."""
        return check_choice("data.truth", truth, TRUTHS)

    def _sequence(self, name: str) -> CtcSequence | None:
        folder, gt, st = (self.root / f"{name}{s}" for s in ("", "_GT", "_ST"))
        frames = numbered(folder, FRAME)
        if not frames:
            self.reject(str(folder), f"{folder}: no frames named t000.tif, t001.tif, ...")
            return None
        tracks = numbered(gt / "TRA", TRACK)
        if not tracks:
            self.reject(
                str(gt / "TRA"),
                f"{gt / 'TRA'}: no track markers man_track000.tif, ... (they give the cells "
                "their identities across frames)",
            )
            return None
        if numbered(gt / "SEG", SEG_3D) or numbered(st / "SEG", SEG_3D):
            self.reject(
                str(gt / "SEG"),
                f"{gt / 'SEG'}: a 3D CTC dataset (man_seg_T_Z.tif); only 2D is read",
            )
            return None
        try:
            depth = len(frame_shape(frames[min(frames)]))
        except DataError as err:
            self.reject(str(frames[min(frames)]), str(err))
            return None
        if depth != 2:
            self.reject(str(folder), f"{folder}: 3D frames; only 2D time-lapse is read")
            return None
        lineage_file = gt / "TRA" / "man_track.txt"
        try:
            lineage = read_lineage(lineage_file) if lineage_file.is_file() else {}
        except DataError as err:
            self.reject(str(lineage_file), str(err))
            return None
        gold = numbered(gt / "SEG", SEG) if self.truth != "silver" else {}
        silver = numbered(st / "SEG", SEG) if self.truth != "gold" else {}
        segmentations = {**silver, **gold}
        sources = {**{n: "silver" for n in silver}, **{n: "gold" for n in gold}}
        for number in sorted(set(segmentations) - set(frames)):
            self.reject(
                str(segmentations[number]),
                f"{segmentations[number]}: a segmentation of frame {number}, but {folder} has no "
                f"t{number:03d}.tif",
            )
        return CtcSequence(
            name=name,
            frames=frames,
            tracks=tracks,
            segmentations={n: p for n, p in segmentations.items() if n in frames},
            lineage=lineage,
            sources=sources,
        )


def frame_shape(path: Path) -> tuple[int, ...]:
    """The frame's spatial shape from its TIFF header (channels and length-1 axes left out):
    two numbers for a 2D frame, three for a 3D one."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            return tuple(n for n, ax in zip(series.shape, series.axes) if ax not in "SC" and n > 1)
    except Exception as err:  # tifffile raises many types for corrupt files
        raise DataError(f"{path}: cannot read image: {err}") from err
