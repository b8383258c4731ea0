"""Generators of the clip layouts users bring: tiny moving-shape videos, synthetic volumes in
every volume format, Cell Tracking Challenge sequences and plain frame folders.

Each returns the truth it wrote so tests can compare what the readers give back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from samtune.inference.clip_files import write_palette_png
from tests.data.volumes.helpers import make_case, write_dicom_series
from tests.helpers import make_tiny_case, save_nifti

VOID = 255


@dataclass
class MovingClip:
    """Frames (``T x H x W x 3`` uint8) and object-id maps (``T x H x W``) of a moving scene.

    Object 1 is a disc moving right on every frame; object 2 a square moving down that is
    hidden (occluded) on frame ``hidden``; object 3 appears only from frame 2 on.
    """

    frames: np.ndarray
    labels: np.ndarray
    hidden: int


def make_moving_clip(
    seed: int, n_frames: int = 6, size: tuple[int, int] = (48, 64), with_late: bool = True
) -> MovingClip:
    """A ``MovingClip`` of ``n_frames`` frames of ``size`` (see the class)."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    frames = rng.integers(0, 40, size=(n_frames, h, w, 3)).astype(np.uint8)
    labels = np.zeros((n_frames, h, w), np.uint8)
    hidden = min(3, n_frames - 1)
    for t in range(n_frames):
        cx, cy = 10 + 3 * t, h // 3 + int(rng.integers(-1, 2))
        labels[t][(yy - cy) ** 2 + (xx - cx) ** 2 <= 36] = 1
        if t != hidden:
            top = 6 + 2 * t
            labels[t, top : top + 9, w - 20 : w - 11] = 2
        if with_late and t >= 2:
            labels[t, h - 12 : h - 4, w // 2 : w // 2 + 8] = 3
    colours = {1: (220, 60, 60), 2: (60, 220, 60), 3: (60, 60, 220)}
    for value, colour in colours.items():
        frames[labels == value] = colour
    return MovingClip(frames, labels, hidden)


def write_vos(
    root: Path,
    layout: str = "davis",
    videos: dict[str, int] | None = None,
    n_frames: int = 6,
    size: tuple[int, int] = (48, 64),
    video_names: dict[str, list[str]] | None = None,
) -> dict[str, dict[str, MovingClip]]:
    """A VOS folder in ``layout`` ``davis``, ``mose`` or ``youtube`` (``videos``: per split;
    ``video_names``: the videos' names per split, else ``<split>-video<k>``).

    - ``davis``: ``JPEGImages/480p/<v>/00000.jpg``, ``Annotations/480p/<v>/00000.png`` with a
      void band (255) around object 1, ``ImageSets/2017/<split>.txt``.
    - ``mose``: ``<split>/JPEGImages/<v>/...`` and ``<split>/Annotations/<v>/...``.
    - ``youtube``: like mose, frames named every 5th (``00000 00005 ...``), annotations on even
      positions only, and ``<split>/meta.json`` naming categories.
    """
    videos = videos or {"train": 3, "val": 1}
    truth: dict[str, dict[str, MovingClip]] = {}
    seed = 0
    for split, count in videos.items():
        truth[split] = {}
        names = []
        for k in range(count):
            name = video_names[split][k] if video_names else f"{split}-video{k}"
            names.append(name)
            clip = make_moving_clip(seed, n_frames=n_frames, size=size)
            seed += 1
            truth[split][name] = clip
            if layout == "davis":
                images, annotations = root / "JPEGImages" / "480p", root / "Annotations" / "480p"
            else:
                images, annotations = root / split / "JPEGImages", root / split / "Annotations"
            step = 5 if layout == "youtube" else 1
            for t in range(n_frames):
                stem = f"{t * step:05d}"
                (images / name).mkdir(parents=True, exist_ok=True)
                Image.fromarray(clip.frames[t]).save(images / name / f"{stem}.jpg", quality=95)
                if layout == "youtube" and t % 2:
                    continue
                labels = clip.labels[t].copy()
                if layout == "davis":
                    ring = np.zeros_like(labels, dtype=bool)
                    inner = labels == 1
                    ring[1:, :] |= inner[:-1, :]
                    ring[:, 1:] |= inner[:, :-1]
                    labels[ring & ~inner] = VOID
                write_palette_png(annotations / name / f"{stem}.png", labels)
        if layout == "davis":
            (root / "ImageSets" / "2017").mkdir(parents=True, exist_ok=True)
            (root / "ImageSets" / "2017" / f"{split}.txt").write_text("\n".join(names) + "\n")
        if layout == "youtube":
            meta = {
                "videos": {
                    name: {
                        "objects": {
                            "1": {"category": "cell", "frames": []},
                            "2": {"category": "ape", "frames": []},
                            "3": {"category": "cell", "frames": []},
                        }
                    }
                    for name in names
                }
            }
            (root / split / "meta.json").write_text(json.dumps(meta))
    return truth


def write_frames(
    root: Path, n_videos: int = 2, n_frames: int = 6, size: tuple[int, int] = (48, 64)
) -> dict[str, MovingClip]:
    """``images/<video>/f<t>.png`` (16-bit grey on video 1) and ``labels/<video>/f<t>_mask.png``
    (uint16 label values = object ids); frame 1 has no label image."""
    truth = {}
    for k in range(n_videos):
        name = f"movie{k}"
        clip = make_moving_clip(50 + k, n_frames=n_frames, size=size)
        truth[name] = clip
        for t in range(n_frames):
            (root / "images" / name).mkdir(parents=True, exist_ok=True)
            (root / "labels" / name).mkdir(parents=True, exist_ok=True)
            frame = clip.frames[t]
            if k == 1:
                frame = frame[..., 0].astype(np.uint16) * 200
            Image.fromarray(frame).save(root / "images" / name / f"f{t}.png")
            if t != 1:
                Image.fromarray(clip.labels[t].astype(np.uint16)).save(
                    root / "labels" / name / f"f{t}_mask.png"
                )
    return truth


def write_ctc(root: Path, sequence: str = "01", n_frames: int = 6, seg_frames=(0, 3)) -> MovingClip:
    """A 2D CTC sequence: 16-bit frames, TRA markers (small squares at each cell's centre) on
    every frame with ``man_track.txt``, gold SEG on ``seg_frames`` with labels renumbered per
    frame (as CTC ships them) and one cell left unsegmented on the second SEG frame, silver ST on
    every frame, and an untracked speck on the first SEG frame."""
    clip = make_moving_clip(90, n_frames=n_frames, size=(48, 64))
    import tifffile

    folder, tra, seg, st = (
        root / sequence,
        root / f"{sequence}_GT" / "TRA",
        root / f"{sequence}_GT" / "SEG",
        root / f"{sequence}_ST" / "SEG",
    )
    for path in (folder, tra, seg, st):
        path.mkdir(parents=True, exist_ok=True)
    lines = {}
    for t in range(n_frames):
        tifffile.imwrite(folder / f"t{t:03d}.tif", clip.frames[t, :, :, 0].astype(np.uint16) * 100)
        markers = np.zeros(clip.labels[t].shape, np.uint16)
        for track in (1, 2, 3):
            ys, xs = np.nonzero(clip.labels[t] == track)
            if ys.size:
                cy, cx = int(ys.mean()), int(xs.mean())
                markers[cy - 1 : cy + 2, cx - 1 : cx + 2] = track
                first, last = lines.get(track, (t, t))
                lines[track] = (min(first, t), max(last, t))
        tifffile.imwrite(tra / f"man_track{t:03d}.tif", markers)
        renumbered = np.zeros(markers.shape, np.uint16)
        for new, track in enumerate(np.random.default_rng(t).permutation([1, 2, 3]), start=5):
            renumbered[clip.labels[t] == track] = new
        tifffile.imwrite(st / f"man_seg{t:03d}.tif", renumbered)
        if t in seg_frames:
            gold = renumbered.copy()
            if t == seg_frames[0]:
                gold[0:3, 0:3] = 40  # a segment without a marker
            if t == seg_frames[-1] and t != seg_frames[0]:
                gold[clip.labels[t] == 1] = 0  # cell 1 not segmented on this frame
            tifffile.imwrite(seg / f"man_seg{t:03d}.tif", gold)
    text = "".join(f"{track} {first} {last} 0\n" for track, (first, last) in sorted(lines.items()))
    (tra / "man_track.txt").write_text(text)
    return clip


VOLUME_FORMATS = ("nifti", "nrrd", "mha", "tiff", "dicom")


def write_volume(root: Path, fmt: str, case: str = "case00", seed: int = 0) -> tuple[Path, Path]:
    """One synthetic CT case (``tests.helpers.make_tiny_case``) in ``fmt``, as
    ``root/images/<case>.<ext>`` and ``root/labels/<case>_seg.<ext>`` (DICOM: a series folder
    with a NIfTI label)."""
    images, labels = root / "images", root / "labels"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    if fmt == "dicom":
        hu, label = make_case(seed)
        write_dicom_series(images / case, hu)
        from samtune.data.datasets.volumes import read_geometry

        save_nifti(labels / f"{case}_seg.nii.gz", label, read_geometry(images / case).affine)
        return images / case, labels / f"{case}_seg.nii.gz"
    hu, label = make_tiny_case(seed)
    if fmt == "nifti":
        return (
            save_nifti(images / f"{case}.nii.gz", hu),
            save_nifti(labels / f"{case}_seg.nii.gz", label),
        )
    if fmt in ("nrrd", "mha"):
        import SimpleITK as sitk

        out = []
        for folder, array, name in ((images, hu, case), (labels, label, f"{case}_seg")):
            image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
            image.SetSpacing((0.8, 0.7, 2.5))
            image.SetOrigin((-5.0, 3.0, 7.0))
            path = folder / f"{name}.{fmt}"
            sitk.WriteImage(image, str(path))
            out.append(path)
        return out[0], out[1]
    if fmt == "tiff":
        import tifffile

        out = []
        for folder, array, name in (
            (images, hu.astype(np.int16), case),
            (labels, label, f"{case}_seg"),
        ):
            path = folder / f"{name}.tif"
            tifffile.imwrite(path, np.ascontiguousarray(array.transpose(2, 1, 0)), imagej=True,
                             metadata={"spacing": 2.5})  # fmt: skip
            out.append(path)
        return out[0], out[1]
    raise ValueError(f"unknown volume format {fmt!r}")
