"""Layouts of README's "Formats as they ship": files as public datasets and tools write them
(TIFF compressions, 16-bit and float TIFF, GIF masks, RGBA and palette images, mixed extensions,
YOLO yaml variants, calibrated TIFF stacks), tiny, with what a user would count by hand.

tifffile writes the TIFF compressions (LZW, JPEG and PackBits through ``imagecodecs``), PIL the
GIF, palette and RGBA files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from tests.data.layouts import YOLO_NAMES, make_scene

FORMAT_FOLDERS = ("DRIVE", "microscopy", "mixed", "yolo_roboflow", "yolo_named", "yolo_file",
                  "stacks")  # fmt: skip
TIFF_COMPRESSIONS = ("lzw", "zlib", "jpeg", "packbits", None)


def _save(path: Path, image: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def _tiff(path: Path, array: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, array, **kwargs)
    return path


def grey_gif(mask: np.ndarray) -> Image.Image:
    """A 0/255 mask as a GIF stores it: a palette image whose index order the writer picks
    (here white is index 0 and black index 1, so indices alone would invert the mask)."""
    indices = (~mask).astype(np.uint8)  # 0 where the mask is on
    image = Image.fromarray(indices, mode="L").convert("P")
    image.putpalette([255, 255, 255, 0, 0, 0])
    return image


def write_drive(root: Path) -> dict:
    """DRIVE as downloaded: ``training/images/<id>_training.tif`` (LZW, RGB),
    ``training/1st_manual/<id>_manual1.gif`` (vessels, 0/255 in a palette) and the field-of-view
    masks ``training/mask/<id>_training_mask.gif`` that are not labels."""
    objects = 0
    for i, key in enumerate((21, 22, 23, 24)):
        scene = make_scene(60 + i, n=2 + i % 2)
        _tiff(root / "training" / "images" / f"{key}_training.tif", scene.image,
              photometric="rgb", compression="lzw")  # fmt: skip
        vessels = scene.masks.any(0)
        _save(root / "training" / "1st_manual" / f"{key}_manual1.gif", grey_gif(vessels))
        fov = np.ones(vessels.shape, bool)
        _save(root / "training" / "mask" / f"{key}_training_mask.gif", grey_gif(fov))
        objects += len(scene.masks)
    return {"images": 4, "objects": objects}


def write_microscopy(root: Path) -> dict:
    """``images/`` of TIFFs in every compression, 16-bit and float32 among them, with instance
    label maps in ``masks/`` as compressed TIFFs (LZW, Deflate, PackBits) and 16-bit PNGs."""
    objects = 0
    rng = np.random.default_rng(5)
    for i, compression in enumerate(TIFF_COMPRESSIONS):
        scene = make_scene(70 + i, n=3)
        labels = np.zeros(scene.image.shape[:2], np.uint16)
        for k, mask in enumerate(scene.masks):
            labels[mask] = 100 * (k + 1)  # instance ids as they are: not 1..n
        objects += len(scene.masks)
        image: np.ndarray = scene.image
        kwargs = {"photometric": "rgb"}
        if i == 1:  # a 16-bit grey camera image
            image = scene.image[..., 0].astype(np.uint16) * 200 + rng.integers(0, 50, labels.shape)
            image = image.astype(np.uint16)
            kwargs = {}
        elif i == 4:  # a float32 intensity map
            image = scene.image[..., 0].astype(np.float32) / 255.0 + 0.01
            kwargs = {}
        _tiff(root / "images" / f"cells_{i}.tif", image, compression=compression, **kwargs)
        if i % 2:
            Image.fromarray(labels).save(_parent(root / "masks" / f"cells_{i}.png"))
        else:
            lossless = compression if compression in ("lzw", "zlib", "packbits") else "lzw"
            _tiff(root / "masks" / f"cells_{i}.tif", labels, compression=lossless)
    return {"images": len(TIFF_COMPRESSIONS), "objects": objects}


def _parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_mixed(root: Path) -> dict:
    """One images folder with ``.png .jpg .tif .gif .bmp`` (an RGBA PNG and a palette image
    among them) and one masks folder of other extensions, paired by stem; one mask is a palette
    PNG whose objects are indices that share one colour (read by index, they are 3 objects)."""
    scenes = [make_scene(80 + i, n=3) for i in range(5)]
    images = root / "images"
    masks = root / "masks"
    rgba = np.dstack([scenes[0].image, np.full(scenes[0].image.shape[:2], 40, np.uint8)])
    _save(images / "a.png", Image.fromarray(rgba, mode="RGBA"))
    _save(images / "b.jpg", Image.fromarray(scenes[1].image))
    _tiff(images / "c.tif", scenes[2].image, photometric="rgb", compression="zlib")
    _save(images / "d.gif", Image.fromarray(scenes[3].image).quantize(64))  # a palette image
    _save(images / "e.bmp", Image.fromarray(scenes[4].image))
    for stem, scene, ext in zip("abcde", scenes, (".tif", ".png", ".gif", ".png", ".tiff")):
        labels = np.zeros(scene.image.shape[:2], np.uint8)
        for k, mask in enumerate(scene.masks):
            labels[mask] = k + 1
        if stem == "d":  # instance ids as palette indices, every object drawn in one colour
            image = Image.fromarray(labels, mode="L").convert("P")
            image.putpalette([0, 0, 0] + [255, 0, 0] * 255)
            _save(masks / f"{stem}{ext}", image)
        elif ext == ".gif":
            _save(masks / f"{stem}{ext}", Image.fromarray(labels * 60, mode="L"))
        elif ext in (".tif", ".tiff"):
            _tiff(masks / f"{stem}{ext}", labels, compression="packbits")
        else:
            _save(masks / f"{stem}{ext}", Image.fromarray(labels))
    return {"images": 5, "objects": sum(len(s.masks) for s in scenes)}


def _yolo_split(root: Path, images: Path, labels: Path, n: int, seed: int) -> int:
    objects = 0
    for i in range(n):
        scene = make_scene(seed + i, n_classes=2)
        h, w = scene.image.shape[:2]
        _save(images / f"img_{seed}_{i}.jpg", Image.fromarray(scene.image))
        lines = []
        for poly, cls in zip(scene.polygons, scene.classes):
            xy = (poly / [w, h]).reshape(-1)
            lines.append(" ".join([str(cls - 1)] + [f"{v:.6f}" for v in xy]))
        labels.mkdir(parents=True, exist_ok=True)
        (labels / f"img_{seed}_{i}.txt").write_text("\n".join(lines) + "\n")
        objects += len(scene.polygons)
    return objects


def _names() -> str:
    return f"nc: {len(YOLO_NAMES)}\nnames: [{', '.join(YOLO_NAMES)}]\n"


def write_yolo_roboflow(root: Path) -> dict:
    """Roboflow's YOLOv8 export: ``data.yaml`` with ``../train/images`` entries (relative to a
    folder above it, as Roboflow writes them), no ``path:``, splits ``train valid test``."""
    counts = {"train": 3, "valid": 2, "test": 1}
    truth = {}
    for s, (split, n) in enumerate(counts.items()):
        objects = _yolo_split(
            root, root / split / "images", root / split / "labels", n, 500 + 10 * s
        )
        truth[{"valid": "val"}.get(split, split)] = {"images": n, "objects": objects}
    (root / "data.yaml").write_text(
        "train: ../train/images\nval: ../valid/images\ntest: ../test/images\n\n" + _names()
        + "\nroboflow:\n  workspace: lab\n  project: cells\n  version: 2\n"
    )  # fmt: skip
    (root / "README.roboflow.txt").write_text("exported from roboflow\n")
    return truth


def write_yolo_named(root: Path) -> dict:
    """An export whose one yaml is named after the project (``cells.v2i.yolov8.yaml``), with
    an empty ``path:`` and Ultralytics' ``images/<split>`` layout."""
    truth = {}
    for s, split in enumerate(("train", "val")):
        n = 3 - s
        objects = _yolo_split(
            root, root / "images" / split, root / "labels" / split, n, 600 + 10 * s
        )
        truth[split] = {"images": n, "objects": objects}
    (root / "cells.v2i.yolov8.yaml").write_text(
        "path:\ntrain: images/train\nval: images/val\n" + _names()
    )
    return truth


def write_yolo_file(root: Path) -> dict:
    """Ultralytics' own habit: the yaml outside the dataset folder, its ``path:`` naming it
    (``path: coco8-seg``), beside another yaml (training settings), so the yaml is given as
    ``data.root=<file.yaml>``; its ``test`` split is not shipped."""
    data = root / "coco8-seg"
    truth = {}
    for s, split in enumerate(("train", "val")):
        n = 2 + s
        objects = _yolo_split(
            data, data / "images" / split, data / "labels" / split, n, 700 + 10 * s
        )
        truth[split] = {"images": n, "objects": objects}
    (root / "coco8-seg.yaml").write_text(
        "path: coco8-seg\ntrain: images/train\nval: images/val\ntest: images/test\n" + _names()
    )
    (root / "hyp.yaml").write_text("lr0: 0.01\nmosaic: 1.0\n")
    return truth


def _stack_labels(seed: int) -> np.ndarray:
    """A ``[z, y, x]`` label stack: two boxes over slices 1-3 and 2-5 of 6."""
    label = np.zeros((6, 32, 40), np.uint8)
    label[1:4, 4 + seed : 14 + seed, 5:15] = 1
    label[2:6, 18:28, 20 + seed : 34] = 2
    return label


def write_stacks(root: Path) -> dict:
    """Microscopy TIFF stacks: ImageJ stacks calibrated in microns (``unit: um``, the pixel
    size in the resolution tags, the step in ``spacing``), one calibrated by resolution tags
    in centimetres (``ResolutionUnit``) without ImageJ metadata, and label stacks saved without
    any calibration, as annotation tools often do."""
    slices = objects = 0
    spacings = {}
    for c, (xy, z) in enumerate(((0.25, 1.5), (0.5, 2.0))):
        label = _stack_labels(c)
        image = (label * 80 + 10).astype(np.uint16)
        _tiff(root / "images" / f"embryo{c}.tif", image, imagej=True, compression="zlib",
              resolution=(1 / xy, 1 / xy), metadata={"spacing": z, "unit": "um", "axes": "ZYX"})  # fmt: skip
        _tiff(root / "labels" / f"embryo{c}.tif", label, compression="lzw")
        spacings[f"embryo{c}"] = (xy * 1e-3, xy * 1e-3, z * 1e-3)
        slices += int(label.any(axis=(1, 2)).sum())
        objects += sum(len(np.unique(s[s > 0])) for s in label)
    label = _stack_labels(2)
    _tiff(root / "images" / "scan2.tif", (label * 50).astype(np.uint8), resolution=(400, 400),
          resolutionunit="CENTIMETER", compression="packbits")  # fmt: skip
    _tiff(root / "labels" / "scan2.tif", label)
    spacings["scan2"] = (10 / 400, 10 / 400, 10.0)  # 1 unit (cm) per slice: no z in the file
    slices += int(label.any(axis=(1, 2)).sum())
    objects += sum(len(np.unique(s[s > 0])) for s in label)
    return {"volumes": 3, "slices": slices, "objects": objects, "spacing_mm": spacings}


def write_format_layouts(work: Path) -> dict[str, dict]:
    """Every layout of :data:`FORMAT_FOLDERS` under ``work``, with the hand counts."""
    return {
        "DRIVE": write_drive(work / "DRIVE"),
        "microscopy": write_microscopy(work / "microscopy"),
        "mixed": write_mixed(work / "mixed"),
        "yolo_roboflow": write_yolo_roboflow(work / "yolo_roboflow"),
        "yolo_named": write_yolo_named(work / "yolo_named"),
        "yolo_file": write_yolo_file(work / "yolo_file"),
        "stacks": write_stacks(work / "stacks"),
    }
