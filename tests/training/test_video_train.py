"""``samtune-train ... training=video``: clip steps end to end, what trains, the frozen cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.data.clip_layouts import write_vos
from tests.helpers import REPO, SMALL_SIZE


def test_video_training_writes_best_ckpt_and_trains_the_memory_path(tmp_path, tiny_checkpoint):
    root = tmp_path / "DAVIS"
    write_vos(root, "davis", videos={"train": 2, "val": 2}, n_frames=6, size=(48, 64))
    out = tmp_path / "run"
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "samtune.cli.train",
            "experiment=smoke",
            "data=vos",
            f"data.root={root}",
            "data.val_split=val",
            "data.num_frames=3",
            "training=video",
            "training.recipe.correction_clicks=2",
            "adapter=frozen",
            "adapter.memory=true",
            f"model.image_size={SMALL_SIZE}",
            f"model.checkpoint={tiny_checkpoint}",
            "trainer.max_steps=2",
            f"hydra.run.dir={out}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    summary = json.loads((out / "summary.json").read_text())
    best = Path(summary["best_checkpoint"])
    assert best.name == "best.ckpt" and best.is_file()
    assert "val/j_propagate_mask" in summary["best_val"]
    assert 0.0 <= summary["best_val"]["val/j_propagate_mask"] <= 1.0
    by_part = summary["parameters"]["by_part"]
    assert by_part["video_only"]["trainable"] == by_part["video_only"]["total"] > 0
    assert by_part["image_encoder"]["trainable"] == 0
    header = (out / "csv" / "metrics.csv").read_text().splitlines()[0]
    for column in ("train/loss_step", "train/object_score_step", "val/j_propagate_mask"):
        assert column in header
    # the memory path moved away from the base weights
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    base = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)["model"]
    moved = [
        k
        for k in base
        if k.startswith("memory_attention.")
        and f"model.{k}" in state
        and not torch.equal(state[f"model.{k}"], base[k])
    ]
    assert moved

    # samtune-eval of best.ckpt on the same split gives the number that picked it
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "samtune.cli.eval",
            "data=vos",
            f"data.root={root}",
            "data.val_split=val",
            f"ckpt={best}",
            "clip_evaluation.protocols=[propagate_mask]",
            f"hydra.run.dir={tmp_path / 'eval'}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["clips"]["propagate_mask"]["n_videos"] == 2
    assert results["clips"]["propagate_mask"]["J"] == pytest.approx(
        summary["best_val"]["val/j_propagate_mask"], abs=1e-4
    )
