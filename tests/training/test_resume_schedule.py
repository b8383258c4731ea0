"""A resume with a new length keeps the recorded learning-rate schedule (then its floor), or
rebuilds it over the new length when asked; both say so, and the checkpoint records the length."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import pytest

from samtune.models.weights import safe_load
from tests.training.test_resume import _train

LR = 1e-4
RATIO = 0.1
# 2 epochs x 2 steps, warm-up over half of them, no validation (the schedule is what is tested)
RUN = [
    "experiment=smoke",
    "adapter=frozen",
    "trainer.max_epochs=2",
    "trainer.limit_val_batches=0",
    "evaluate_after_training=false",
    f"optim.lr={LR}",
    "optim.warmup_fraction=0.5",
    f"optim.min_lr_ratio={RATIO}",
]


def _factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, cosine to ``RATIO`` at ``total``, then ``RATIO``."""
    if step < warmup:
        return (step + 1) / warmup
    p = min(1.0, (step - warmup) / (total - warmup))
    return RATIO + (1 - RATIO) * (1 + math.cos(math.pi * p)) / 2


def _lrs(run: Path) -> dict[int, float]:
    """The learning rate Lightning's LearningRateMonitor logged for each step."""
    out: dict[int, float] = {}
    with open(run / "csv" / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row.get("lr-AdamW/decoder_decay"):
                step = int(float(row["step"]))
                assert step not in out, f"step {step} logged twice"
                out[step] = float(row["lr-AdamW/decoder_decay"])
    return out


def _schedule(run: Path) -> dict:
    return safe_load(run / "checkpoints" / "last.ckpt")["samtune"]["schedule"]


@pytest.mark.slow
def test_resume_with_more_epochs_continues_then_holds_the_floor_or_rescales(tmp_path):
    first = _train([*RUN, f"hydra.run.dir={tmp_path}/A"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    original = {s: LR * _factor(s, 4, 2) for s in range(4)}
    assert _lrs(tmp_path / "A") == pytest.approx(original, rel=1e-9)
    assert _schedule(tmp_path / "A") == {"total_steps": 4, "warmup_steps": 2}
    shutil.copytree(tmp_path / "A", tmp_path / "B")

    # default: the recorded curve, then its floor for the 4 extra steps
    cont = _train([f"resume={tmp_path}/A", "trainer.max_epochs=4"], tmp_path)
    assert cont.returncode == 0, cont.stderr[-3000:]
    log = cont.stdout + cont.stderr
    assert "resume at step 4: the run's length changed from 4 to 8 optimiser steps" in log
    assert "holds its floor" in log
    floor = {s: LR * RATIO for s in range(4, 8)}
    assert _lrs(tmp_path / "A") == pytest.approx({**original, **floor}, rel=1e-9)
    assert _schedule(tmp_path / "A") == {"total_steps": 4, "warmup_steps": 2}

    # rescale: warm-up and cosine rebuilt over 8 steps, from the resumed step on
    rescaled = _train(
        [f"resume={tmp_path}/B", "trainer.max_epochs=4", "optim.on_resume_length_change=rescale"],
        tmp_path,
    )
    assert rescaled.returncode == 0, rescaled.stderr[-3000:]
    log = rescaled.stdout + rescaled.stderr
    assert "resume at step 4: the run's length changed from 4 to 8 optimiser steps" in log
    assert "rebuilds the schedule over 8 steps (warm-up 4)" in log
    new = {s: LR * _factor(s, 8, 4) for s in range(4, 8)}
    assert new[4] == pytest.approx(LR)  # the jump the default avoids
    assert _lrs(tmp_path / "B") == pytest.approx({**original, **new}, rel=1e-9)
    assert _schedule(tmp_path / "B") == {"total_steps": 8, "warmup_steps": 4}


def test_resume_length_policy_is_checked():
    from samtune.training.optim import OptimConfig
    from samtune.validation import ConfigValueError

    with pytest.raises(ConfigValueError, match="optim.on_resume_length_change.*'stretch'"):
        OptimConfig(on_resume_length_change="stretch")
