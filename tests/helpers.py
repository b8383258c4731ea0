"""Helpers shared by tests: repository paths and small generated data in every format."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from samtune.data.datasets.synthetic import SyntheticDataset
from samtune.data.sample import Sample

REPO = Path(__file__).resolve().parents[1]
SHARED_NUCLEI = REPO.parent / "shared" / "data" / "nuclei-mini"
SMALL_SIZE = 128
NIFTI_SPACING = (0.8, 0.7, 2.5)
TINY_VOLUME_SHAPE = (32, 32, 6)


def make_blob_sample(size: tuple[int, int] = (96, 120), n: int = 3, seed: int = 0) -> Sample:
    """One image of samtune's synthetic data: ``n`` bright ellipses on a dark noisy background.

    Named ``blob<seed>.png`` with ``image_id`` ``seed``, so samples of different seeds differ.
    """
    sample = SyntheticDataset(num_images=1, size=size, objects=(n, n), seed=seed).load(0)
    sample.meta.update(file=f"blob{seed}.png", image_id=seed)
    return sample


def tiny_dataset(tmp_path: Path) -> tuple[Path, Path]:
    """Two images with instance masks, as folders and as one COCO json per split."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    entries, anns = [], []
    for i in range(2):
        Image.fromarray(np.full((24, 32, 3), 40 * i, np.uint8)).save(images / f"im{i}.png")
        labels = np.zeros((24, 32), np.uint8)
        labels[3:10, 4:12] = 1
        labels[14:20, 18:30] = 2
        Image.fromarray(labels).save(masks / f"im{i}.png")
        entries.append({"id": i, "file_name": f"im{i}.png", "height": 24, "width": 32})
        for value in (1, 2):
            rle = mask_utils.encode(np.asfortranarray((labels == value).astype(np.uint8)))
            seg = {"size": [24, 32], "counts": rle["counts"].decode("ascii")}
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": 1,
                    "segmentation": seg,
                    "iscrowd": 0,
                }
            )
    for split, keep in (("train", {0}), ("val", {1})):
        data = {
            "images": [e for e in entries if e["id"] in keep],
            "annotations": [a for a in anns if a["image_id"] in keep],
            "categories": [{"id": 1, "name": "thing"}],
        }
        (tmp_path / f"{split}.json").write_text(json.dumps(data))
    return images, masks


def nifti_affine(spacing: tuple[float, float, float] = NIFTI_SPACING) -> np.ndarray:
    """A NIfTI affine with ``spacing`` on the diagonal and a fixed origin."""
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = (5.0, -3.0, 7.0)
    return affine


def save_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Save ``array`` as a NIfTI file at ``path`` (folders made as needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, nifti_affine() if affine is None else affine), str(path))
    return path


def make_tiny_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """HU noise with a class-1 ellipsoid (slices 1-4) and a class-2 one (slices 2-4), labels.

    Slices 0 and 5 hold no object.
    """
    rng = np.random.default_rng(seed)
    hu = rng.integers(-120, 40, size=TINY_VOLUME_SHAPE).astype(np.float32)
    ii, jj, kk = np.meshgrid(*(np.arange(n) for n in TINY_VOLUME_SHAPE), indexing="ij")
    label = np.zeros(TINY_VOLUME_SHAPE, dtype=np.uint8)
    shift = int(rng.integers(-2, 3))
    liver = ((ii - 11 - shift) / 6) ** 2 + ((jj - 12) / 5) ** 2 + ((kk - 2.5) / 1.8) ** 2 <= 1
    kidney = ((ii - 23) / 4) ** 2 + ((jj - 21 + shift) / 5) ** 2 + ((kk - 3) / 1.2) ** 2 <= 1
    label[liver], hu[liver] = 1, 60
    label[kidney], hu[kidney] = 2, 250
    return hu, label


def write_cases(root: Path, n: int = 3) -> tuple[Path, Path]:
    """``n`` cases as ``ct/caseXX.nii.gz`` and ``labels/caseXX_seg.nii.gz``."""
    for i in range(n):
        hu, label = make_tiny_case(i)
        save_nifti(root / "ct" / f"case{i:02d}.nii.gz", hu)
        save_nifti(root / "labels" / f"case{i:02d}_seg.nii.gz", label)
    return root / "ct", root / "labels"
