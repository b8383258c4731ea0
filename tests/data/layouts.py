"""Generators of the data layouts users bring, tiny (64-96 px), written into a folder.

Each scene holds a few non-overlapping octagons on noise; the functions return what they wrote
so tests can compare what the readers give back with the truth.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from samtune.data.datasets.objects import polygon_mask


@dataclass
class Scene:
    """An image, its objects as polygons (pixels, x y) and masks, and their classes (1..)."""

    image: np.ndarray
    polygons: list[np.ndarray]
    masks: np.ndarray
    classes: list[int]


def make_scene(
    seed: int, size: tuple[int, int] = (72, 88), n: int = 3, n_classes: int = 1
) -> Scene:
    """``n`` octagons in a row (never touching), classes cycling 1..``n_classes``."""
    rng = np.random.default_rng(seed)
    h, w = size
    image = rng.integers(0, 50, size=(h, w, 3)).astype(np.uint8)
    polygons, masks, classes = [], [], []
    cell = w / n
    for k in range(n):
        cx = cell * (k + 0.5) + rng.uniform(-2, 2)
        cy = h / 2 + rng.uniform(-h / 6, h / 6)
        r = min(cell * 0.35, h * 0.25) * rng.uniform(0.8, 1.0)
        angles = np.arange(8) * np.pi / 4 + np.pi / 8
        poly = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], axis=1)
        mask = polygon_mask(poly, size)
        image[mask] = rng.integers(150, 255, size=3)
        polygons.append(poly)
        masks.append(mask)
        classes.append(k % n_classes + 1)
    return Scene(image, polygons, np.stack(masks), classes)


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def write_per_object_nested(root: Path, n: int = 4, start: int = 0) -> dict[str, Scene]:
    """``<root>/<id>/images/<id>.png`` and ``<root>/<id>/masks/<k>.png`` (0/255)."""
    scenes = {}
    for i in range(start, start + n):
        name = f"{i:04x}beef"
        scene = make_scene(i)
        _png(root / name / "images" / f"{name}.png", scene.image)
        for k, mask in enumerate(scene.masks):
            _png(root / name / "masks" / f"m{k}.png", mask.astype(np.uint8) * 255)
        scenes[name] = scene
    return scenes


def write_per_object_flat(root: Path, n: int = 4) -> dict[str, Scene]:
    """``<root>/images/<stem>.png`` and ``<root>/masks/<stem>/<k>.png`` (0/1)."""
    scenes = {}
    for i in range(n):
        stem = f"img{i}"
        scene = make_scene(10 + i)
        _png(root / "images" / f"{stem}.png", scene.image)
        for k, mask in enumerate(scene.masks):
            _png(root / "masks" / stem / f"{k}.png", mask.astype(np.uint8))
        scenes[stem] = scene
    return scenes


YOLO_NAMES = ["nucleus", "cytoplasm"]


def write_yolo(
    root: Path, counts: dict[str, int] | None = None, roboflow: bool = False
) -> dict[str, dict[str, Scene]]:
    """An Ultralytics segmentation export: ``data.yaml``, ``images/<split>``, ``labels/<split>``.

    With ``roboflow=True`` Roboflow's variant instead: ``<split>/images``, ``<split>/labels``,
    splits ``train``/``valid``/``test`` and ``../<split>/images`` entries in ``data.yaml``.
    Polygons are normalised to 0..1; class indices start at 0.
    """
    counts = counts or {"train": 4, "val": 2}
    scenes: dict[str, dict[str, Scene]] = {}
    entries = {}
    for split, n in counts.items():
        folder = "valid" if roboflow and split == "val" else split
        images = root / folder / "images" if roboflow else root / "images" / folder
        labels = root / folder / "labels" if roboflow else root / "labels" / folder
        labels.mkdir(parents=True, exist_ok=True)
        entries[split] = f"../{folder}/images" if roboflow else f"images/{folder}"
        scenes[split] = {}
        for i in range(n):
            scene = make_scene(100 * len(scenes) + i, n_classes=2)
            h, w = scene.image.shape[:2]
            _png(images / f"{split}_{i}.png", scene.image)
            lines = []
            for poly, cls in zip(scene.polygons, scene.classes):
                xy = (poly / [w, h]).reshape(-1)
                lines.append(" ".join([str(cls - 1)] + [f"{v:.6f}" for v in xy]))
            (labels / f"{split}_{i}.txt").write_text("\n".join(lines) + "\n")
            scenes[split][f"{split}_{i}"] = scene
    header = "" if roboflow else f"path: {root}\n"
    names = "\n".join(f"  {k}: {name}" for k, name in enumerate(YOLO_NAMES))
    splits = "".join(f"{s}: {e}\n" for s, e in entries.items())
    (root / "data.yaml").write_text(f"{header}{splits}nc: {len(YOLO_NAMES)}\nnames:\n{names}\n")
    return scenes


def write_roboflow_coco(
    root: Path, counts: dict[str, int] | None = None
) -> dict[str, dict[str, Scene]]:
    """A Roboflow COCO export: ``train/ valid/ test/`` each with images and ``_annotations.coco.json``.

    Like Roboflow's, category 0 is a supercategory with no annotations; objects are polygons.
    """
    counts = counts or {"train": 4, "valid": 2, "test": 1}
    scenes: dict[str, dict[str, Scene]] = {}
    for s, (split, n) in enumerate(counts.items()):
        folder = root / split
        images, annotations = [], []
        scenes[split] = {}
        for i in range(n):
            scene = make_scene(200 + 10 * s + i, n_classes=2)
            name = f"cell_{i}_png.rf.{i:06x}.png"
            _png(folder / name, scene.image)
            h, w = scene.image.shape[:2]
            images.append({"id": i, "file_name": name, "height": h, "width": w})
            for poly, cls, mask in zip(scene.polygons, scene.classes, scene.masks):
                annotations.append({
                    "id": len(annotations), "image_id": i, "category_id": cls,
                    "segmentation": [poly.reshape(-1).round(2).tolist()],
                    "area": int(mask.sum()), "bbox": [0, 0, 1, 1], "iscrowd": 0,
                })  # fmt: skip
            scenes[split][name] = scene
        categories = [{"id": 0, "name": "cells", "supercategory": "none"}] + [
            {"id": k + 1, "name": name, "supercategory": "cells"}
            for k, name in enumerate(YOLO_NAMES)
        ]
        data = {"images": images, "annotations": annotations, "categories": categories}
        (folder / "_annotations.coco.json").write_text(json.dumps(data))
    return scenes


def write_labelme(root: Path, n: int = 4) -> dict[str, Scene]:
    """LabelMe json next to each image: polygons labelled by class, plus one rectangle each."""
    scenes = {}
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        scene = make_scene(300 + i, n_classes=2)
        h, w = scene.image.shape[:2]
        _png(root / f"photo{i}.png", scene.image)
        shapes = [
            {"label": YOLO_NAMES[cls - 1], "points": poly.tolist(), "group_id": None,
             "shape_type": "polygon", "flags": {}}
            for poly, cls in zip(scene.polygons, scene.classes)
        ]  # fmt: skip
        shapes.append({"label": "box", "points": [[1, 1], [9, 9]], "shape_type": "rectangle"})
        doc = {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": f"photo{i}.png",
               "imageData": None, "imageHeight": h, "imageWidth": w}  # fmt: skip
        (root / f"photo{i}.json").write_text(json.dumps(doc))
        scenes[f"photo{i}"] = scene
    return scenes


PALETTE = {"tumour": (255, 0, 0), "stroma": (0, 128, 255)}


def write_semantic(root: Path, n: int = 4, palette: bool = False) -> dict[str, Scene]:
    """``images/<stem>.png`` and ``masks/<stem>.png``: class values 1, 2 (or palette colours)."""
    scenes = {}
    colours = list(PALETTE.values())
    for i in range(n):
        scene = make_scene(400 + i, n=4, n_classes=2)
        _png(root / "images" / f"tile{i}.png", scene.image)
        if palette:
            mask = np.zeros((*scene.image.shape[:2], 3), np.uint8)
            for m, cls in zip(scene.masks, scene.classes):
                mask[m] = colours[cls - 1]
        else:
            mask = np.zeros(scene.image.shape[:2], np.uint8)
            for m, cls in zip(scene.masks, scene.classes):
                mask[m] = cls
        _png(root / "masks" / f"tile{i}.png", mask)
        scenes[f"tile{i}"] = scene
    return scenes


# --- regions the data marks "not labelled" ------------------------------------------------------


def _voc_palette() -> list[int]:
    """PASCAL VOC's colour map: index k coloured by the bits of k; 255 is (224, 224, 192)."""
    palette = []
    for k in range(256):
        r = g = b = 0
        c = k
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def write_voc(root: Path, n: int = 2) -> dict[str, tuple[Scene, np.ndarray]]:
    """PASCAL VOC: ``JPEGImages/<id>.jpg``, ``SegmentationObject/<id>.png`` (palette PNG,
    instance ids 1.., a 2 px border of 255 around each object) and ``SegmentationClass/``
    (class ids, the same border). Returns each scene and its border (the 255 pixels)."""
    out = {}
    for i in range(n):
        scene = make_scene(500 + i, n=3, n_classes=2)
        stem = f"2007_00{i:04d}"
        (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
        Image.fromarray(scene.image).save(root / "JPEGImages" / f"{stem}.jpg", quality=95)
        objects = np.zeros(scene.image.shape[:2], np.uint8)
        classes = np.zeros(scene.image.shape[:2], np.uint8)
        for k, (m, cls) in enumerate(zip(scene.masks, scene.classes), start=1):
            objects[m], classes[m] = k, cls
        from scipy import ndimage

        grown = ndimage.binary_dilation(objects > 0, iterations=2)
        border = grown & (objects == 0)
        for folder, array in (("SegmentationObject", objects), ("SegmentationClass", classes)):
            array = array.copy()
            array[border] = 255
            image = Image.fromarray(array, mode="P")
            image.putpalette(_voc_palette())
            (root / folder).mkdir(parents=True, exist_ok=True)
            image.save(root / folder / f"{stem}.png")
        out[stem] = (scene, border)
    return out


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def write_coco_single(root: Path, n: int = 3) -> dict[str, dict]:
    """A dataset shipped as one split: images and one ``annotations.json`` in one folder, with a
    crowd region per image (``iscrowd=1``: an RLE on even images, a polygon on odd ones).
    Returns per file name its scene, the crowd region and the image id."""
    root.mkdir(parents=True, exist_ok=True)
    images, annotations, out = [], [], {}
    for i in range(n):
        scene = make_scene(600 + i, n=3)
        name = f"frame{i:03d}.png"
        _png(root / name, scene.image)
        h, w = scene.image.shape[:2]
        images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
        for poly, mask in zip(scene.polygons, scene.masks):
            annotations.append({
                "id": len(annotations) + 1, "image_id": i + 1, "category_id": 1,
                "segmentation": [poly.reshape(-1).round(2).tolist()],
                "area": int(mask.sum()), "bbox": [0, 0, 1, 1], "iscrowd": 0,
            })  # fmt: skip
        if i % 2 == 0:  # a crowd along the bottom rows, as an RLE
            crowd = np.zeros((h, w), bool)
            crowd[h - 8 :, :] = True
            segmentation = _rle(crowd)
        else:  # a crowd in the top-left corner, as a polygon
            corner = [0.0, 0.0, 20.0, 0.0, 20.0, 10.0, 0.0, 10.0]
            crowd = polygon_mask(np.asarray(corner).reshape(-1, 2), (h, w))
            segmentation = [corner]
        annotations.append({
            "id": len(annotations) + 1, "image_id": i + 1, "category_id": 1,
            "segmentation": segmentation, "area": int(crowd.sum()), "bbox": [0, 0, 1, 1],
            "iscrowd": 1,
        })  # fmt: skip
        out[name] = {"scene": scene, "crowd": crowd, "id": i + 1}
    data = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "nucleus"}],
    }
    (root / "annotations.json").write_text(json.dumps(data))
    return out


def write_labelme_ignore(root: Path, n: int = 2) -> dict[str, tuple[Scene, np.ndarray]]:
    """LabelMe jsons with an ``__ignore__`` polygon (a band at the right edge), the image
    embedded as ``imageData`` (no image file). Returns each scene and its ignore region."""
    import base64
    import io

    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for i in range(n):
        scene = make_scene(700 + i, n=2)
        h, w = scene.image.shape[:2]
        band = [[w - 10.0, 0.0], [w - 1.0, 0.0], [w - 1.0, h - 1.0], [w - 10.0, h - 1.0]]
        shapes = [
            {"label": "nucleus", "points": poly.tolist(), "group_id": None,
             "shape_type": "polygon", "flags": {}}
            for poly in scene.polygons
        ]  # fmt: skip
        shapes.append({"label": "__ignore__", "points": band, "shape_type": "polygon"})
        buffer = io.BytesIO()
        Image.fromarray(scene.image).save(buffer, format="PNG")
        doc = {"version": "5.4.1", "flags": {}, "shapes": shapes,
               "imagePath": f"C:\\Users\\me\\scan{i}.png",
               "imageData": base64.b64encode(buffer.getvalue()).decode("ascii"),
               "imageHeight": h, "imageWidth": w}  # fmt: skip
        (root / f"scan{i}.json").write_text(json.dumps(doc))
        out[f"scan{i}"] = (scene, polygon_mask(np.asarray(band), (h, w)))
    return out


def write_fov(root: Path, n: int = 3) -> dict[str, tuple[Scene, np.ndarray]]:
    """``images/``, ``masks/`` and ``fov/<stem>_mask.png``: 255 outside a disc (the camera's
    field of view), 0 inside, as a retina set's masks are once inverted. Returns each scene and
    the pixels outside the field of view."""
    out = {}
    for i in range(n):
        scene = make_scene(800 + i, n=3)
        h, w = scene.image.shape[:2]
        _png(root / "images" / f"eye{i}.png", scene.image)
        labels = np.zeros((h, w), np.uint8)
        for k, m in enumerate(scene.masks, start=1):
            labels[m] = k
        _png(root / "masks" / f"eye{i}.png", labels)
        yy, xx = np.mgrid[:h, :w]
        outside = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 > (0.55 * w) ** 2
        _png(root / "fov" / f"eye{i}_mask.png", outside.astype(np.uint8) * 255)
        out[f"eye{i}"] = (scene, outside)
    return out


def write_documented_layouts(work: Path) -> None:
    """The folders README.md's data commands name (``/data/<name>`` read as ``<name>/``)."""
    import SimpleITK as sitk

    from tests.data import clip_layouts
    from tests.data.format_layouts import write_format_layouts

    clip_layouts.write_vos(
        work / "DAVIS", "davis", {"train": 2, "val": 1}, n_frames=8,
        video_names={"train": ["bmx-trees", "blackswan"], "val": ["dog"]},
    )  # fmt: skip
    clip_layouts.write_vos(work / "youtube_vos", "youtube", {"train": 3}, n_frames=8)
    for sequence in ("01", "02"):
        clip_layouts.write_ctc(work / "Fluo-N2DH-GOWT1", sequence, n_frames=8, seg_frames=(0, 3))
    clip_layouts.write_frames(work / "movies", n_videos=2, n_frames=8)

    scenes = write_semantic(work / "isic", n=4)
    for stem in scenes:
        mask = work / "isic" / "masks" / f"{stem}.png"
        binary = (np.array(Image.open(mask)) > 0).astype(np.uint8) * 255
        _png(mask.with_name(f"{stem}_segmentation.png"), binary)
        mask.unlink()
    write_per_object_nested(work / "stage1_train")
    write_pairing_layouts(work)
    write_format_layouts(work)
    write_yolo(work / "yolo_export", {"train": 4, "val": 2})
    write_roboflow_coco(work / "roboflow_coco")
    write_labelme(work / "labelme")
    write_semantic(work / "tiles")
    write_semantic(work / "tiles_rgb", palette=True)
    write_voc(work / "VOC2012")
    write_coco_single(work / "coco_single")
    write_labelme_ignore(work / "labelme_ignore")
    write_fov(work / "fundus")
    write_per_object_flat(work / "my cells")
    write_per_object_flat(work / "Zellkerne é")
    rng = np.random.default_rng(0)
    for case in range(3):
        hu = rng.normal(-100, 30, size=(8, 40, 40)).astype(np.float32)  # [k, j, i]
        label = np.zeros(hu.shape, np.uint8)
        label[1:5, 10:24, 8:26] = 1
        label[2:6, 28:36, 26:36] = 2
        hu[label == 1], hu[label == 2] = 60, 200
        for folder, array, name in (
            ("ct", hu, f"case{case}.nrrd"),
            ("labels", label, f"case{case}_seg.nrrd"),
        ):
            image = sitk.GetImageFromArray(array)
            image.SetSpacing((0.8, 0.8, 2.5))
            (work / "nrrd" / folder).mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(image, str(work / "nrrd" / folder / name))


# --- pairing beyond a suffix, case folders and channels (volumes are tiny: 8 x 24 x 24) -------

PAIRING_FOLDERS = ("retina", "manifest", "ctmr", "Task02_Heart", "brats", "totalseg")


def _save_nifti(path: Path, array: np.ndarray) -> Path:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([1.0, 1.0, 2.0, 1.0])), str(path))
    return path


def _save_nrrd(path: Path, array: np.ndarray) -> Path:
    import SimpleITK as sitk

    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 2.0))
    sitk.WriteImage(image, str(path))
    return path


def tiny_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(image, label)`` of shape 24 x 24 x 8: label 1 (one box over slices 1-4) and label 2
    (one box over slices 3-6); the image is brighter inside them."""
    rng = np.random.default_rng(seed)
    label = np.zeros((24, 24, 8), np.uint8)
    label[3:10, 4:12, 1:5] = 1
    label[14:21, 13:20, 3:7] = 2
    image = rng.normal(0, 10, size=label.shape).astype(np.float32)
    image[label == 1], image[label == 2] = 60, 200
    return image, label


def _volume_counts(labels: list[np.ndarray], axis: int = 2) -> dict:
    """What a user counts in label volumes sliced along ``axis``: volumes, slices holding a
    label, objects (one per label value in a slice: tiny_case's labels are one box each) and
    voxels per label value."""
    slices = objects = 0
    voxels: dict[int, int] = {}
    for label in labels:
        for k in range(label.shape[axis]):
            values = [int(v) for v in np.unique(np.take(label, k, axis=axis)) if v > 0]
            slices += bool(values)
            objects += len(values)
        for value in np.unique(label[label > 0]):
            voxels[int(value)] = voxels.get(int(value), 0) + int((label == value).sum())
    return {"volumes": len(labels), "slices": slices, "objects": objects, "voxels": voxels}


def write_pairing_layouts(work: Path) -> dict[str, dict]:
    """The layouts of README's "Pairing beyond a suffix" commands, with what a user would
    count by hand (``{folder: {...}}``)."""
    truth: dict[str, dict] = {}
    # retina (DRIVE): images/<id>_training.tif, masks/<id>_manual1.png, binary vessel maps
    for i, key in enumerate((21, 22, 23)):
        scene = make_scene(40 + i, n=3)
        _png(work / "retina" / "images" / f"{key}_training.tif", scene.image)
        _png(
            work / "retina" / "masks" / f"{key}_manual1.png",
            scene.masks.any(0).astype(np.uint8) * 255,
        )
    truth["retina"] = {"pairs": 3, "objects": 9, "classes": ["1"]}
    # a manifest: pairs.csv naming files anywhere, relative to it, with a split column
    rows = ["image,mask,split"]
    for i in range(4):
        scene = make_scene(50 + i, n=2)
        _png(work / "manifest" / "raw" / f"scan {i}.png", scene.image)
        _png(work / "manifest" / "annotations" / f"gt-{i}.png", scene.masks.any(0).astype(np.uint8))
        rows.append(f"raw/scan {i}.png,annotations/gt-{i}.png,{'val' if i == 3 else 'train'}")
    (work / "manifest" / "pairs.csv").write_text("\n".join(rows) + "\n")
    truth["manifest"] = {"pairs": 4, "train": 3, "val": 1, "objects": 8, "classes": ["1"]}
    # CT/MR folder: case_image.nrrd with case_label.nrrd or case-label.nrrd, all in one folder
    labels = []
    for case, label_name in (
        ("case0", "case0_label"),
        ("case1", "case1-label"),
        ("case2", "case2_label"),
    ):
        image, label = tiny_case(int(case[-1]))
        _save_nrrd(work / "ctmr" / f"{case}_image.nrrd", image.transpose(2, 1, 0))
        _save_nrrd(work / "ctmr" / f"{label_name}.nrrd", label.transpose(2, 1, 0))
        labels.append(label)
    truth["ctmr"] = {"pairs": 3, **_volume_counts(labels), "classes": ["1", "2"]}
    # MSD: dataset.json with training [{image, label}], imagesTr/, labelsTr/
    training, labels = [], []
    for i in (3, 4, 5):
        image, label = tiny_case(10 + i)
        _save_nifti(work / "Task02_Heart" / "imagesTr" / f"la_00{i}.nii.gz", image)
        _save_nifti(work / "Task02_Heart" / "labelsTr" / f"la_00{i}.nii.gz", label)
        labels.append(label)
        training.append(
            {"image": f"./imagesTr/la_00{i}.nii.gz", "label": f"./labelsTr/la_00{i}.nii.gz"}
        )
    msd = {"name": "Heart", "labels": {"0": "background", "1": "left atrium", "2": "aorta"},
           "numTraining": 3, "training": training, "test": []}  # fmt: skip
    (work / "Task02_Heart" / "dataset.json").write_text(json.dumps(msd, indent=1))
    truth["Task02_Heart"] = {
        "pairs": 3,
        **_volume_counts(labels),
        "classes": ["left atrium", "aorta"],
    }
    # BraTS: one folder per case, four sequences and a float label holding 0, 1, 2
    labels = []
    for c in range(2):
        name = f"BraTS-GLI-0000{c}-000"
        image, label = tiny_case(20 + c)
        for k, seq in enumerate(("flair", "t1", "t1c", "t2")):
            _save_nifti(work / "brats" / name / f"{name}-{seq}.nii.gz", image * (k + 1))
        _save_nifti(work / "brats" / name / f"{name}-seg.nii.gz", label.astype(np.float32))
        labels.append(label)
    truth["brats"] = {"pairs": 2, **_volume_counts(labels), "classes": ["1", "2"]}
    # TotalSegmentator: <case>/ct.nii.gz and <case>/segmentations/<structure>.nii.gz (binary)
    labels = []
    for c in range(2):
        image, label = tiny_case(30 + c)
        case = work / "totalseg" / f"s000{c + 1}"
        _save_nifti(case / "ct.nii.gz", image)
        _save_nifti(case / "segmentations" / "liver.nii.gz", (label == 1).astype(np.uint8))
        _save_nifti(case / "segmentations" / "spleen.nii.gz", (label == 2).astype(np.uint8))
        labels.append(label)  # liver is 1, spleen 2: the structures' names in sorted order
    truth["totalseg"] = {"pairs": 2, **_volume_counts(labels), "classes": ["liver", "spleen"]}
    return truth
