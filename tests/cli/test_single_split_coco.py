"""A COCO dataset shipped as one split (one json beside its images) is checked and evaluated as
that split through the CLIs' own tasks, with no train json, and its crowd regions not scored."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from tests.data import layouts
from tests.helpers import REPO


def _run(task, config: str, overrides: list[str], out: Path) -> None:
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config, overrides=overrides, return_hydra_config=True)
    cfg.hydra.runtime.output_dir = str(out)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    task(cfg)


def test_single_split_coco_is_checked_and_evaluated(tmp_path, tiny_checkpoint):
    from samtune.cli import check_data as check_cli
    from samtune.cli import eval as eval_cli

    truth = layouts.write_coco_single(tmp_path / "coco")
    data = ["data=coco", f"data.root={tmp_path / 'coco'}", "model.image_size=128"]
    _run(check_cli.task, "check_data", data, tmp_path / "check")  # exits 1 on a problem
    report = json.loads((tmp_path / "check" / "data_check.json").read_text())
    assert report["ok"] and report["splits"]["train"]["status"] == "not defined"
    assert report["splits"]["val"]["ignore"]["crowd_ignored"] == 3
    _run(
        eval_cli.task,
        "eval",
        [*data, f"model.checkpoint={tiny_checkpoint}", "evaluation.max_clicks=2",
         "evaluation.progress=false"],
        tmp_path / "eval",
    )  # fmt: skip
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["summary"]["split"] == "val"
    assert results["counts"]["images"] == 3 and results["counts"]["objects"] == 9
    crowd = sum(
        int(np.count_nonzero(item["crowd"] & ~item["scene"].masks.any(axis=0)))
        for item in truth.values()
    )
    assert results["counts"]["ignored_pixels"] == crowd > 0
    assert results["counts"]["images_with_ignore"] == 3
    assert results["protocol_version"] == {"point1": 2, "box": 2, "clicks": 2}
