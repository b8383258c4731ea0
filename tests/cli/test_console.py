"""What a user reads when the output goes to a file: each message once, progress lines, no
advertisements, and the protocol table at the end of training and of samtune-eval."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import REPO

TABLE_HEADER = "| protocol | objects | mIoU | mDice | NoC@85 | NoC@90 |"
# the prefixes a message gets from Hydra's console format, Hydra's default and Lightning's own
PREFIX = re.compile(r"^(\[\d\d:\d\d:\d\d\]\[\w+\] |\[[\d\- :,]+\]\[[\w.]+\]\[\w+\] - |INFO: )")


def _run_to_file(module: str, args: list[str], cwd: Path, log_file: Path) -> str:
    """Run ``python -m module args`` with stdout and stderr into one file, as nohup or SLURM do."""
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", PYTHONPATH=str(REPO))
    with log_file.open("w") as out:
        proc = subprocess.run(
            [sys.executable, "-m", module, *args],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=600,
        )
    text = log_file.read_text()
    assert proc.returncode == 0, text[-5000:]
    return text


def _messages(text: str) -> list[str]:
    """Each printed message without its logging prefix; table rules and banners left out."""
    out = []
    for line in text.splitlines():
        line = PREFIX.sub("", line).strip()
        if line and not re.fullmatch(r"[=!|\-\s]+", line):
            out.append(line)
    return out


def test_training_and_eval_console_in_a_file(tmp_path):
    train_log = _run_to_file(
        "samtune.cli.train",
        [
            "experiment=smoke",
            "callbacks.progress_log.every_n_steps=1",
            f"hydra.run.dir={tmp_path}/run",
        ],
        tmp_path,
        tmp_path / "train.log",
    )
    repeated = {m: n for m, n in Counter(_messages(train_log)).items() if n > 1}
    assert not repeated, repeated
    assert "Seed set to 42" in train_log
    for noise in ("litlogger", "Tip:", "LeafSpec", "torch.jit.script"):
        assert noise not in train_log, noise
    assert "\r" not in train_log  # no progress bar redrawn into the file
    progress = re.findall(
        r"step (\d+)/2 \(epoch 1/1\) \| [\d.]+ it/s \| loss [\d.]+ \| ETA", train_log
    )
    assert progress == ["1", "2"], train_log[-3000:]
    assert "validation after epoch 1 (step 2): val/miou" in train_log
    assert "memory: one training step needs about" in train_log
    assert TABLE_HEADER in train_log  # the end-of-run summary

    eval_log = _run_to_file(
        "samtune.cli.eval",
        [
            f"ckpt={tmp_path}/run/checkpoints/best.ckpt",
            "model.checkpoint=null",
            "model.image_size=128",
            "data=synthetic",
            "max_images=2",
            f"hydra.run.dir={tmp_path}/eval",
        ],
        tmp_path,
        tmp_path / "eval.log",
    )
    assert TABLE_HEADER in eval_log
    rows = [line for line in eval_log.splitlines() if line.startswith(("| point1", "| clicks"))]
    assert len(rows) == 2 and all(re.search(r"\| 0\.\d{4} \|", r) for r in rows), eval_log
    assert "\r" not in eval_log and "litlogger" not in eval_log


def test_noise_filter_keeps_real_messages():
    from samtune.cli.console import NoiseFilter

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("lightning", logging.INFO, __file__, 1, msg, None, None)

    f = NoiseFilter()
    assert not f.filter(record("💡 Tip: For seamless cloud logging, try installing [litlogger]"))
    assert not f.filter(record("Computing image embeddings for the provided image..."))
    assert f.filter(record("GPU available: False, used: False"))
    assert f.filter(record("the loss is NaN at step 3"))


def test_progress_log_settings_and_durations():
    from samtune.training.progress import ProgressLog, format_duration

    assert [format_duration(s) for s in (5, 75, 3725, float("inf"))] == [
        "5s",
        "1m15s",
        "1h02m",
        "?",
    ]
    assert ProgressLog(when="always").active and not ProgressLog(when="never").active
    with pytest.raises(ValueError, match="every_n_steps must be a positive integer, got 0"):
        ProgressLog(every_n_steps=0)
    with pytest.raises(ValueError, match="when must be one of"):
        ProgressLog(when="sometimes")
