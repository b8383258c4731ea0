"""samtune-check-data: counts against numpy, every bad file named, exit status 1 on bad data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from PIL import Image

from samtune.cli.check_data import check_data, task
from samtune.data.check import check_datamodule, format_check
from samtune.data.datamodules.coco import CocoDataModule
from samtune.data.datamodules.folder import FolderDataModule
from samtune.data.datamodules.synthetic import SyntheticDataModule
from tests.data.layouts import write_yolo
from tests.helpers import REPO, make_tiny_case, nifti_affine, save_nifti, tiny_dataset, write_cases


def _volume_args(images: Path, labels: Path) -> list[str]:
    return [
        "data=volumes",
        f"data.images={images}",
        f"data.labels={labels}",
        "data.window=abdomen",
        "data.classes={1: liver, 2: kidney}",
        "data.val_fraction=0.34",
        "model.image_size=128",
    ]


def _compose(overrides: list[str], out: Path):
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        cfg = compose("check_data", overrides=overrides, return_hydra_config=True)
    cfg.hydra.runtime.output_dir = str(out)
    HydraConfig.instance().set_config(cfg)
    return cfg


def _bad_volumes(root: Path) -> tuple[Path, Path]:
    """Two good cases, a truncated image file, a pair whose shapes differ, an image alone."""
    images, labels = write_cases(root, n=2)
    hu, label = make_tiny_case(7)
    corrupt = save_nifti(images / "corrupt.nii.gz", hu)
    data = corrupt.read_bytes()
    corrupt.write_bytes(data[: len(data) // 2])  # the header reads, the voxels do not
    save_nifti(labels / "corrupt_seg.nii.gz", label)
    save_nifti(images / "mismatch.nii.gz", hu)
    save_nifti(labels / "mismatch_seg.nii.gz", label[:, :, :4])
    save_nifti(images / "orphan.nii.gz", hu)
    return images, labels


def test_cli_names_corrupt_and_mismatched_volumes_and_exits_1(tmp_path):
    images, labels = _bad_volumes(tmp_path / "data")
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "samtune.cli.check_data", *_volume_args(images, labels),
         f"hydra.run.dir={out}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("corrupt.nii.gz", "mismatch.nii.gz", "mismatch_seg.nii.gz", "orphan.nii.gz"):
        assert name in proc.stdout, name
    assert "shape mismatch" in proc.stdout and "FAILED" in proc.stdout
    report = json.loads((out / "data_check.json").read_text())
    assert report["ok"] is False and report["data"] == "volumes"
    bad = {Path(p["file"]).name: p["reason"] for p in report["problems"] if p["file"]}
    # val's only volume is the corrupt one: the split has no usable slice, named as such
    (unusable,) = [p for p in report["problems"] if p["file"] is None]
    assert unusable["split"] == "val" and "could be read" in unusable["reason"]
    assert set(bad) == {"corrupt.nii.gz", "mismatch.nii.gz", "orphan.nii.gz"}
    assert (
        "cannot read the NIfTI voxel data" in bad["corrupt.nii.gz"]
        and "(32, 32, 4)" in bad["mismatch.nii.gz"]
    )
    assert "no label partner" in bad["orphan.nii.gz"]
    assert report["splits"]["test"]["status"] == "not defined"


def test_clean_volumes_pass_with_counts_equal_to_numpy(tmp_path):
    images, labels = write_cases(tmp_path / "data", n=3)
    hu, label = make_tiny_case(9)  # a fourth case with 3x thicker slices: a spacing outlier
    save_nifti(images / "thick.nii.gz", hu, nifti_affine((0.8, 0.7, 7.5)))
    save_nifti(labels / "thick_seg.nii.gz", label, nifti_affine((0.8, 0.7, 7.5)))
    cfg = _compose(_volume_args(images, labels) + ["data.val_fraction=0.25"], tmp_path / "run")
    task(cfg)  # no SystemExit: the data are clean
    report = json.loads((tmp_path / "run" / "data_check.json").read_text())
    assert report["ok"] is True and report["problems"] == []
    seen_cases = []
    for split in ("train", "val"):
        entry = report["splits"][split]
        volumes = entry["volumes"]
        seen_cases += [o["volume"] for o in volumes["spacing_outliers"]]
        cases = _cases_of(split, cfg, tmp_path)
        truth = {c: _label(labels, c) for c in cases}
        slices = {
            k: sum(int((t == k).any(axis=(0, 1)).sum()) for t in truth.values()) for k in (1, 2)
        }
        for k, name in ((1, "liver"), (2, "kidney")):
            assert entry["classes"][str(k)] == {
                "name": name,
                "objects": slices[k],
                "images": slices[k],
            }
            voxels = sum(int((t == k).sum()) for t in truth.values())
            assert volumes["classes"][str(k)]["voxels"] == voxels
        assert (
            entry["images"]
            == entry["read"]
            == sum(int((t > 0).any(axis=(0, 1)).sum()) for t in truth.values())
        )
        assert volumes["count"] == len(cases) and entry["tiny_masks"] == 0
    assert seen_cases == ["thick"]


def _cases_of(split: str, cfg, tmp_path: Path) -> list[str]:
    from hydra.utils import instantiate

    return instantiate(cfg.data).raw_dataset(split).cases


def _label(labels: Path, case: str) -> np.ndarray:
    import nibabel as nib

    return np.asarray(nib.load(str(labels / f"{case}_seg.nii.gz")).dataobj).astype(int)


def test_bad_volumes_in_process_raise_system_exit_1(tmp_path):
    images, labels = _bad_volumes(tmp_path / "data")
    cfg = _compose(_volume_args(images, labels), tmp_path / "run")
    with pytest.raises(SystemExit) as exit_info:
        task(cfg)
    assert exit_info.value.code == 1


def _folder_with_problems(root: Path) -> tuple[Path, Path]:
    """5 good pairs (one much larger, one with a 2-pixel object), a corrupt image, a mask of the
    wrong size."""
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    for i in range(5):
        size = (200, 240) if i == 4 else (40, 48)
        image = np.full((*size, 3), 30 * i, np.uint8)
        labels = np.zeros(size, np.uint8)
        labels[5:15, 6:20] = 1
        if i == 1:
            labels[30, 40:42] = 2  # 2 px at 40x48 -> about 17 px at 128: tiny only below 20
        Image.fromarray(image).save(images / f"im{i}.png")
        Image.fromarray(labels).save(masks / f"im{i}.png")
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    Image.fromarray(np.zeros((40, 48), np.uint8) + 1).save(masks / "broken.png")
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(images / "wrong.png")
    Image.fromarray(np.ones((30, 48), np.uint8)).save(masks / "wrong.png")
    return images, masks


def test_folder_check_lists_every_bad_file_tiny_masks_and_size_outliers(tmp_path):
    images, masks = _folder_with_problems(tmp_path)
    dm = FolderDataModule(
        train_images=images, train_masks=masks, val_fraction=0.0, image_size=128, on_error="skip"
    )
    with pytest.warns(UserWarning):
        report = check_datamodule(dm, splits=["train"], tiny_area=20)
    entry = report["splits"]["train"]
    assert report["ok"] is False
    assert {Path(p["file"]).name for p in entry["problems"]} == {"broken.png", "wrong.png"}
    wrong = next(p["reason"] for p in entry["problems"] if p["file"].endswith("wrong.png"))
    assert "30x48" in wrong and "40x48" in wrong
    assert entry["read"] == 5 and entry["objects"] == 6
    assert [(Path(t["item"]).name, t["area"]) for t in entry["tiny_mask_items"]] == [("im1.png", 2)]
    # the object's pixels once resized as training resizes (nearest neighbour at pixel
    # centres, PIL's NEAREST), not its area scaled by (128 / 40) x (128 / 48) = 17.07
    two_px = np.zeros((40, 48), np.uint8)
    two_px[30, 40:42] = 1
    resized = np.asarray(Image.fromarray(two_px).resize((128, 128), Image.Resampling.NEAREST))
    assert entry["tiny_mask_items"][0]["area_at_image_size"] == int(resized.sum()) == 15
    assert [Path(o["item"]).name for o in entry["size_outliers"]] == ["im4.png"]
    assert entry["sizes"] == {"min": [40, 48], "median": [40, 48], "max": [200, 240]}
    text = format_check(report)
    assert (
        "broken.png" in text
        and "wrong.png" in text
        and text.endswith("FAILED: 2 problem(s) (bad files or splits)")
    )


def test_synthetic_and_coco_checks(tmp_path):
    dm = SyntheticDataModule(num_train=3, num_val=2, image_size=64, on_error="skip")
    report = check_datamodule(dm)
    assert report["ok"] is True and report["splits"]["test"]["status"] == "not defined"
    for split in ("train", "val"):
        assert report["splits"][split]["objects"] == dm.raw_dataset(split).stats["objects"]
    images, _ = tiny_dataset(tmp_path)
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(images / "im1.png")  # json says 24x32
    coco = CocoDataModule(
        root=images,
        train_json=tmp_path / "train.json",
        val_json=tmp_path / "val.json",
        image_size=64,
        on_error="skip",
    )
    with pytest.warns(UserWarning):
        report = check_datamodule(coco)
    assert report["ok"] is False and report["splits"]["train"]["problems"] == []
    (problem,) = report["splits"]["val"]["problems"]
    assert problem["file"].endswith("im1.png") and "10x10" in problem["reason"]
    assert report["splits"]["train"]["classes"] == {
        "1": {"name": "thing", "objects": 2, "images": 1}
    }


def test_a_split_that_cannot_be_built_is_an_error(tmp_path):
    cfg = _compose(
        ["data=folder", f"data.train_images={tmp_path / 'none'}", f"data.train_masks={tmp_path}"],
        tmp_path / "run",
    )
    report = check_data(cfg, tmp_path / "run", "folder")
    assert report["ok"] is False and report["splits"]["train"]["status"] == "error"
    assert str(tmp_path / "none") in report["splits"]["train"]["message"]


def test_bad_data_at_construction_is_one_line_and_exit_1(tmp_path):
    write_yolo(tmp_path / "export", {"train": 1})
    (tmp_path / "export" / "labels" / "train" / "train_0.txt").write_text("0 0.1 0.1 0.2\n")
    (tmp_path / "export" / "data.yaml").write_text("train: gone/\nclasses: [cell]\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "samtune.cli.check_data", "data=yolo", "data.root=export"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-3000:]
    assert "bad data: export/data.yaml: expected a YOLO data.yaml with 'names'" in output
    assert "Error in call to target" not in output and "Traceback" not in output
