"""Every config in configs/data composes with Hydra and instantiates a working datamodule."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import REPO
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image

from samtune.data.datamodule import SamDataModule

CONFIG_DIR = REPO / "configs"
DATA_CONFIGS = sorted(p.stem for p in (CONFIG_DIR / "data").glob("*.yaml"))


def _tiny_dataset(tmp_path):
    """Two images with instance masks, as folders and as one COCO json per split."""
    from pycocotools import mask as mask_utils

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


def _overrides(name: str, tmp_path) -> list[str]:
    if name == "coco":
        return [
            f"data.root={tmp_path / 'images'}",
            f"data.train_json={tmp_path / 'train.json'}",
            f"data.val_json={tmp_path / 'val.json'}",
        ]
    if name == "folder":
        return [
            f"data.train_images={tmp_path / 'images'}",
            f"data.train_masks={tmp_path / 'masks'}",
            "data.val_fraction=0.5",
        ]
    if name == "volumes":
        from test_volumes_train_eval import write_cases

        images, labels = write_cases(tmp_path / "volumes", n=2)
        return [f"data.images={images}", f"data.labels={labels}", "data.val_fraction=0.5"]
    import data_layouts

    root = tmp_path / name
    if name == "per_object":
        data_layouts.write_per_object_nested(root, n=2)
    elif name == "yolo":
        data_layouts.write_yolo(root, {"train": 2, "val": 1})
    elif name == "labelme":
        data_layouts.write_labelme(root, n=2)
    elif name == "semantic":
        data_layouts.write_semantic(root, n=2)
        return [
            f"data.train_images={root / 'images'}",
            f"data.train_masks={root / 'masks'}",
            "data.classes={1: tumour, 2: stroma}",
            "data.val_fraction=0.5",
        ]
    else:
        return []
    return [f"data.root={root}", "data.val_fraction=0.5"]


def test_all_expected_configs_exist():
    assert DATA_CONFIGS == [
        "coco", "folder", "labelme", "nuclei_mini", "per_object", "semantic", "synthetic",
        "volumes", "yolo",
    ]  # fmt: skip


@pytest.mark.parametrize("name", DATA_CONFIGS)
def test_config_composes_and_instantiates(name, tmp_path):
    _tiny_dataset(tmp_path)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose(
            overrides=[f"+data={name}", "+model.image_size=128", *_overrides(name, tmp_path)]
        )
    assert cfg.data.image_size == 128 and cfg.data.skip_log is None
    dm = instantiate(cfg.data)
    assert isinstance(dm, SamDataModule) and dm.image_size == 128
    assert dm.augment is not None and dm.augment.get("hflip") == cfg.data.augment.get("hflip")
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["images"].shape[1:] == (3, 128, 128)
    assert len(dm.raw_dataset("val")) >= 1


@pytest.mark.parametrize("name", ["coco", "folder", "per_object", "yolo", "labelme", "semantic"])
def test_required_paths_are_marked_missing(name):
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose(overrides=[f"+data={name}", "+model.image_size=128"])
    required = {
        "coco": ["root"],  # the jsons are found in an export folder when not given
        "folder": ["train_images", "train_masks"],
        "per_object": ["root"],
        "yolo": ["root"],
        "labelme": ["root"],
        "semantic": ["train_images", "train_masks", "classes"],
    }[name]
    assert [key for key in required if OmegaConf.is_missing(cfg.data, key)] == required
