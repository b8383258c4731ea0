"""samtune-check-data to_coco=...: what was read, written as one COCO json that reads back."""

from __future__ import annotations

import json

import numpy as np
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from samtune.cli.check_data import check_data, plain_overrides
from samtune.data.datamodules.yolo import YoloDataModule
from samtune.data.datasets.coco import CocoDataset
from tests.data.layouts import write_yolo
from tests.helpers import REPO, write_cases


def _cfg(overrides, out):
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        cfg = compose("check_data", overrides=overrides, return_hydra_config=True)
    cfg.hydra.runtime.output_dir = str(out)
    HydraConfig.instance().set_config(cfg)
    return cfg


def test_yolo_export_round_trips_through_coco(tmp_path):
    write_yolo(tmp_path / "export", {"train": 3, "val": 2})
    out = tmp_path / "coco" / "all.json"
    cfg = _cfg(
        ["data=yolo", f"data.root={tmp_path / 'export'}", "model.image_size=64", f"to_coco={out}"],
        tmp_path / "run",
    )
    report = check_data(cfg, tmp_path / "run", "yolo")
    assert report["ok"] and report["to_coco"]["per_split"] == {"train": 3, "val": 2}
    data = json.loads(out.read_text())
    assert [c["name"] for c in data["categories"]] == ["nucleus", "cytoplasm"]
    assert [i["split"] for i in data["images"]] == ["train"] * 3 + ["val"] * 2
    dm = YoloDataModule(root=tmp_path / "export", image_size=64)
    original = [
        dm.raw_dataset(s)[i] for s in ("train", "val") for i in range(len(dm.raw_dataset(s)))
    ]
    back = CocoDataset(root=out.parent, ann_file=out)
    assert len(back) == 5
    for i, sample in enumerate(original):
        again = back[i]
        np.testing.assert_array_equal(again.image, sample.image)
        np.testing.assert_array_equal(again.masks, sample.masks)
        assert again.class_ids.tolist() == sample.class_ids.tolist()


def test_volume_slices_are_written_as_png(tmp_path):
    images, labels = write_cases(tmp_path / "vol", n=2)
    out = tmp_path / "slices.json"
    cfg = _cfg(
        ["data=volumes", f"data.images={images}", f"data.labels={labels}", "data.window=abdomen",
         "data.val_fraction=0.5", "model.image_size=64", f"to_coco={out}"],
        tmp_path / "run",
    )  # fmt: skip
    report = check_data(cfg, tmp_path / "run", "volumes")
    coco = report["to_coco"]
    assert coco["images"] == report["splits"]["train"]["images"] + report["splits"]["val"]["images"]
    back = CocoDataset(root=tmp_path, ann_file=out)
    assert len(back) == coco["images"] and back.stats["objects"] == coco["annotations"]
    assert (tmp_path / "slices_images").is_dir()


def test_dash_dash_to_coco_is_an_override():
    assert plain_overrides(["data=yolo", "--to-coco", "a b.json"]) == [
        "data=yolo",
        "to_coco='a b.json'",
    ]
    assert plain_overrides(["--to-coco=x.json"]) == ["to_coco=x.json"]
