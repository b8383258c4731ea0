"""Training end to end through samtune-train (the learning check is in test_learning.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO


def _run_train(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "samtune.cli.train", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def adapter_runs(tmp_path_factory, tiny_checkpoint):
    """One multirun over the three adapters: a few steps each, from a known checkpoint."""
    work = tmp_path_factory.mktemp("train")
    proc = _run_train(
        [
            "-m",
            "experiment=smoke",
            "adapter=frozen,lora,full",
            f"model.checkpoint={tiny_checkpoint}",
            "trainer.max_steps=3",
            "logger=default",
            f"hydra.sweep.dir={work}/multirun",
        ],
        cwd=work,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    runs = {}
    for summary_file in sorted((work / "multirun").glob("*/summary.json")):
        summary = json.loads(summary_file.read_text())
        runs[summary["adapter"]] = (summary_file.parent, summary)
    return runs, proc.stdout


def test_each_adapter_trains_and_writes_checkpoints_and_metrics(adapter_runs):
    runs, stdout = adapter_runs
    assert set(runs) == {"frozen", "lora", "full"}
    for adapter, (run_dir, summary) in runs.items():
        assert Path(summary["best_checkpoint"]).is_file(), adapter
        assert Path(summary["last_checkpoint"]).name == "last.ckpt"
        metrics = (run_dir / "csv" / "metrics.csv").read_text()
        for column in (
            "train/loss_step",
            "train/focal_step",
            "train/dice_step",
            "train/iou_step",
            "val/miou_point1",
            "val/miou_box",
            "val/miou",
        ):
            assert column in metrics.splitlines()[0], (adapter, column)
        assert (run_dir / "eval" / "results.json").is_file()
        assert list((run_dir / "wandb").glob("offline-run-*")), "W&B offline run missing"
        assert summary["parameters"]["trainable"] < summary["parameters"]["total"]
    assert "samtune: training finished" in stdout


def _sam_state(ckpt: Path) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}


def test_lora_trains_only_lora_and_decoder(adapter_runs, tiny_state_dict):
    runs, _ = adapter_runs
    run_dir, summary = runs["lora"]
    frac = summary["parameters"]["trainable"] / summary["parameters"]["total"]
    assert frac < 0.25
    state = _sam_state(Path(summary["last_checkpoint"]))
    # a small checkpoint: the frozen base weights are referenced, not stored
    assert "image_encoder.trunk.blocks.0.attn.qkv.base_layer.weight" not in state
    changed_lora = [k for k in state if "lora_B" in k and state[k].abs().sum() > 0]
    assert changed_lora, "LoRA B matrices are still zero after training"
    for key, value in state.items():
        if "lora_" in key:
            continue
        base_key = key.replace(".base_layer", "")
        before = tiny_state_dict[base_key]
        if key.startswith(("sam_mask_decoder.", "sam_prompt_encoder.")):
            continue
        assert torch.equal(value, before), f"{key} changed but is not a LoRA or decoder weight"
    decoder_changed = any(
        not torch.equal(state[k], tiny_state_dict[k])
        for k in state
        if k.startswith("sam_mask_decoder.")
    )
    assert decoder_changed


def test_frozen_keeps_encoder_and_full_changes_it(adapter_runs, tiny_state_dict):
    runs, _ = adapter_runs
    frozen = _sam_state(Path(runs["frozen"][1]["last_checkpoint"]))
    full = _sam_state(Path(runs["full"][1]["last_checkpoint"]))
    enc = [k for k in tiny_state_dict if k.startswith("image_encoder.trunk.")]
    assert not any(k in frozen for k in enc)  # small checkpoint: the frozen encoder is referenced
    assert any(not torch.equal(full[k], tiny_state_dict[k]) for k in enc)
    mem = [k for k in tiny_state_dict if k.startswith(("memory_attention.", "memory_encoder."))]
    assert all(torch.equal(full[k], tiny_state_dict[k]) for k in mem)
