"""A tuned run without validation keeps its weights and is never called zero-shot, and
samtune-eval of it takes the run's own split (a non-default data.seed and val_fraction), or stops
when the data named on the command line would score the run's training images.

The CLIs' Hydra tasks run in this process on a generated image folder (128 px, one step).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samtune.data.datamodules.base import seeded_split
from samtune.evaluation.follow_run import TrainingOverlapError
from samtune.evaluation.report.compare import adapter_label
from tests.cli.test_data_layouts_train_eval import _run as run_task
from tests.data.layouts import make_scene

N_IMAGES, VAL_FRACTION, RUN_SEED = 8, 0.25, 3


def _folder(root: Path) -> list[str]:
    """``N_IMAGES`` images with instance-label masks; their data overrides."""
    for i in range(N_IMAGES):
        scene = make_scene(700 + i, n=3)
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(exist_ok=True)
        Image.fromarray(scene.image).save(root / "images" / f"cell{i}.png")
        labels = np.zeros(scene.image.shape[:2], np.uint8)
        for k, mask in enumerate(scene.masks):
            labels[mask] = k + 1
        Image.fromarray(labels).save(root / "masks" / f"cell{i}.png")
    return [
        "data=folder",
        f"data.train_images={root / 'images'}",
        f"data.train_masks={root / 'masks'}",
        f"data.val_fraction={VAL_FRACTION}",
    ]


def _files(results_dir: Path) -> set[str]:
    with open(results_dir / "per_object.csv") as f:
        return {Path(row["file"]).name for row in csv.DictReader(f)}


def _split(seed: int) -> tuple[set[str], set[str]]:
    train, val = seeded_split(N_IMAGES, VAL_FRACTION, seed)
    return {f"cell{i}.png" for i in train}, {f"cell{i}.png" for i in val}


@pytest.fixture(scope="module")
def run_without_validation(tmp_path_factory) -> tuple[Path, list[str]]:
    from samtune.cli import train as train_cli

    work = tmp_path_factory.mktemp("follow")
    data = _folder(work / "data")
    run_task(
        train_cli.task,
        "train",
        ["experiment=smoke", "adapter=frozen", *data, f"data.seed={RUN_SEED}",
         "trainer.limit_train_batches=1", "trainer.check_val_every_n_epoch=5",
         "evaluation.max_clicks=2", "logger=csv"],
        work / "run",
    )  # fmt: skip
    return work / "run", data


def test_a_run_without_validation_keeps_its_weights_and_says_what_it_evaluated(
    run_without_validation,
):
    from samtune.training.run import format_summary

    run, _ = run_without_validation
    summary = json.loads((run / "summary.json").read_text())
    last = run / "checkpoints" / "last.ckpt"
    assert summary["last_checkpoint"] == str(last) and last.is_file()
    assert summary["best_checkpoint"] == "" and summary["best_val"] == {}
    assert summary["validated"] is False and summary["global_step"] == 1
    assert "trainer.check_val_every_n_epoch=5" in summary["validation_note"]
    printed = format_summary(summary)  # what the run printed at its end
    assert "best val   none: no validation ran in this run" in printed
    assert f"eval       weights at the end of training (step 1, saved as {last})" in printed
    results = json.loads((run / "eval" / "results.json").read_text())
    evaluated = results["summary"]["evaluated"]
    assert evaluated == {**evaluated, "kind": "end_of_training", "path": str(last), "tuned": True}
    assert results["summary"]["random_init"] is True  # tuned from random weights: not zero-shot
    assert adapter_label(results["summary"]) == "frozen"
    assert "/ frozen" in (run / "eval" / "report.md").read_text().splitlines()[0]
    assert _files(run / "eval") == _split(RUN_SEED)[1]


def test_eval_takes_the_runs_split_and_stops_on_training_images(run_without_validation, tmp_path):
    from samtune.cli import eval as eval_cli

    run, data = run_without_validation
    common = [f"ckpt={run}", "model.image_size=128", "evaluation.max_clicks=2"]
    run_task(eval_cli.task, "eval", common, tmp_path / "own")  # no data=: the run's split
    own = json.loads((tmp_path / "own" / "results.json").read_text())
    assert own["summary"]["data_config"] == "recorded by the run"
    assert own["summary"]["evaluated"]["path"] == str(run / "checkpoints" / "last.ckpt")
    assert own["summary"]["training_overlap"]["overlap"] == 0
    assert _files(tmp_path / "own") == _split(RUN_SEED)[1]
    # the same weights on the same images as the end-of-training evaluation: the same numbers
    at_end = json.loads((run / "eval" / "results.json").read_text())["aggregates"]
    assert own["aggregates"] == at_end

    # another split seed of the same folder: its val images are training images of the run
    other = [*data, "data.seed=0"]
    shared = _split(0)[1] & _split(RUN_SEED)[0]
    assert shared
    with pytest.raises(TrainingOverlapError, match=f"{len(shared)} of the 2 image"):
        run_task(eval_cli.task, "eval", [*common, *other], tmp_path / "other")
    assert not (tmp_path / "other" / "results.json").exists()  # nothing written
    run_task(
        eval_cli.task,
        "eval",
        [*common, *other, "evaluation.allow_overlap=true", "evaluation.protocols=[point1]"],
        tmp_path / "ok",
    )
    allowed = json.loads((tmp_path / "ok" / "results.json").read_text())
    assert allowed["summary"]["training_overlap"]["overlap"] == len(shared)
    assert allowed["summary"]["data_config"] == "command line"
