"""Each data layout users bring trains through samtune-train and evaluates through samtune-eval.

The CLIs' own Hydra tasks run in this process on generated data (128 px, one training step),
so the test costs seconds per layout instead of a Python start-up per command.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from tests.data import layouts as data_layouts
from tests.helpers import REPO


def _layout(name: str, root: Path) -> list[str]:
    """Generate ``name``'s layout under ``root``; return the data overrides that read it."""
    if name == "per_object":
        data_layouts.write_per_object_nested(root, n=3)
        return ["data=per_object", f"data.root={root}", "data.val_fraction=0.34"]
    if name == "yolo":
        data_layouts.write_yolo(root, {"train": 2, "val": 1})
        return ["data=yolo", f"data.root={root}"]
    if name == "coco_export":
        data_layouts.write_roboflow_coco(root, {"train": 2, "valid": 1})
        return ["data=coco", f"data.root={root}"]
    if name == "labelme":
        data_layouts.write_labelme(root, n=3)
        return ["data=labelme", f"data.root={root}", "data.val_fraction=0.34"]
    if name == "semantic":
        data_layouts.write_semantic(root, n=3, palette=True)
        return [
            "data=semantic", f"data.train_images={root / 'images'}",
            f"data.train_masks={root / 'masks'}", "data.val_fraction=0.34",
            "data.classes={tumour: [255, 0, 0], stroma: [0, 128, 255]}",
        ]  # fmt: skip
    if name == "folder_suffix":
        data_layouts.write_semantic(root, n=3)
        for mask in (root / "masks").glob("*.png"):
            mask.rename(mask.with_name(f"{mask.stem}_segmentation.png"))
        return [
            "data=folder", f"data.train_images={root / 'images'}",
            f"data.train_masks={root / 'masks'}", "data.mask_suffix=_segmentation",
            "data.connectivity=4", "data.mask_type=binary", "data.val_fraction=0.34",
        ]  # fmt: skip
    raise ValueError(name)


def _run(task, config: str, overrides: list[str], out: Path) -> None:
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config, overrides=overrides, return_hydra_config=True)
    cfg.hydra.runtime.output_dir = str(out)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # as in a Hydra job: the task sees its own config only
    task(cfg)


# Two layouts in the default run (one per reader family: the object-files base and the folder
# pairing); the others are as cheap each but add up, so they run with -m slow.
SLOW = pytest.mark.slow
LAYOUTS = [
    "yolo",
    "semantic",
    pytest.param("per_object", marks=SLOW),
    pytest.param("coco_export", marks=SLOW),
    pytest.param("labelme", marks=SLOW),
    pytest.param("folder_suffix", marks=SLOW),
]


@pytest.mark.parametrize("name", LAYOUTS)
def test_train_then_eval(name, tmp_path, tiny_checkpoint):
    from samtune.cli import eval as eval_cli
    from samtune.cli import train as train_cli

    data = _layout(name, tmp_path / "data")
    common = [*data, "model.image_size=128", "data.batch_size=2"]
    _run(
        train_cli.task,
        "train",
        ["experiment=smoke", *common, f"model.checkpoint={tiny_checkpoint}",
         "trainer.max_steps=1", "trainer.limit_val_batches=1", "evaluate_after_training=false",
         "logger=csv"],
        tmp_path / "train",
    )  # fmt: skip
    summary = json.loads((tmp_path / "train" / "summary.json").read_text())
    last = Path(summary["last_checkpoint"])
    assert last.is_file(), summary
    assert (
        "train:" in summary["data_summary"] and "skipped (bad data): 0" in summary["data_summary"]
    )
    _run(
        eval_cli.task,
        "eval",
        [*common, f"ckpt={last}", "evaluation.max_clicks=2", "evaluation.progress=false",
         "max_images=2"],
        tmp_path / "eval",
    )  # fmt: skip
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert set(results["aggregates"]) == {"point1", "box", "clicks"}
    per_class = results["aggregates"]["box"].get("per_class") or {}
    if name in ("yolo", "coco_export", "labelme", "semantic"):  # class names from the data
        names = {"nucleus", "cytoplasm", "tumour", "stroma"}
        assert set(map(str, per_class)) & names, per_class
