"""Runs survive: kill -9 then resume equals the uninterrupted run; SIGTERM saves, says how to
resume and exits non-zero; one run per output folder; small checkpoints for frozen/lora."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from samtune.models.weights import safe_load
from samtune.training.resume import validation_follows
from tests.helpers import REPO

# 2 epochs x 2 steps of a frozen-encoder run at 128 px with the default recipe (augmentations on),
# last.ckpt after every step
RUN = [
    "experiment=smoke",
    "adapter=frozen",
    "trainer.max_epochs=2",
    "callbacks.last_steps.every_n_train_steps=1",
    "evaluate_after_training=false",
]


def _env() -> dict[str, str]:
    return dict(os.environ, WANDB_MODE="offline", PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def _train(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "samtune.cli.train", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "samtune.cli.train", *args],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    end = time.time() + timeout
    while not path.is_file():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < end, f"{path} did not appear in {timeout} s"
        time.sleep(0.1)


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return safe_load(ckpt)["state_dict"]


def _val_rows(run: Path) -> list[str]:
    lines = (run / "csv" / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    cols = [i for i, name in enumerate(header) if name.startswith("val/") or name == "step"]
    val_cols = [i for i in cols if header[i].startswith("val/")]
    rows = [row.split(",") for row in lines[1:]]
    # the rows that hold validation numbers (a row of only train metrics has its val cells empty)
    return [",".join(r[i] for i in cols) for r in rows if any(r[i] for i in val_cols)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("resume")
    proc = _train([*RUN, f"hydra.run.dir={work}/A"], work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work / "A"


def test_kill9_then_resume_equals_uninterrupted(uninterrupted, tmp_path):
    run = tmp_path / "B"
    proc = _start([*RUN, f"hydra.run.dir={run}"], tmp_path)
    _wait_for(run / "checkpoints" / "last.ckpt", proc)
    time.sleep(random.uniform(0.0, 1.0))  # somewhere after the first checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    killed_at = safe_load(run / "checkpoints" / "last.ckpt")["global_step"]
    assert killed_at < 4, "the run finished before it was killed"
    assert (run / ".samtune.lock").is_file()  # left behind by the killed run

    resumed = _train([f"resume={run}"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "taking over the stale lock" in resumed.stdout + resumed.stderr

    a, b = (
        _weights(uninterrupted / "checkpoints" / "last.ckpt"),
        _weights(run / "checkpoints" / "last.ckpt"),
    )
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-6, rtol=0, msg=key)
    assert safe_load(run / "checkpoints" / "last.ckpt")["global_step"] == 4
    assert len(_val_rows(uninterrupted)) == 2  # one validation per epoch
    assert _val_rows(run) == _val_rows(uninterrupted)
    summaries = [json.loads((r / "summary.json").read_text()) for r in (uninterrupted, run)]
    assert summaries[0]["best_val"] == summaries[1]["best_val"]
    assert summaries[0]["data"] == summaries[1]["data"]
    assert not (run / ".samtune.lock").exists()
    assert not list((run / "checkpoints").glob(".*.tmp"))


def test_a_signal_before_a_validation_leads_to_that_validation_after_the_resume(
    uninterrupted, tmp_path
):
    """SIGTERM at the end of epoch 1's last batch, before its validation: the resumed run still
    validates epoch 1, and ends as the uninterrupted run (augmentations on)."""
    run = tmp_path / "V"
    signal_at = [
        "+callbacks.signal._target_=tests.training.signal_at_step.SignalAtStep",
        "+callbacks.signal.step=2",
    ]
    stopped = _train([*RUN, *signal_at, f"hydra.run.dir={run}"], tmp_path)
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert safe_load(run / "checkpoints" / "last.ckpt")["global_step"] == 2
    resumed = _train([f"resume={run}"], tmp_path)  # step 2 is behind it: no second signal
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert len(_val_rows(uninterrupted)) == 2
    assert _val_rows(run) == _val_rows(uninterrupted)
    a, b = (
        _weights(uninterrupted / "checkpoints" / "last.ckpt"),
        _weights(run / "checkpoints" / "last.ckpt"),
    )
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-6, rtol=0, msg=key)


@pytest.mark.parametrize(
    "signum",
    [
        signal.SIGTERM,
        pytest.param(signal.SIGINT, marks=pytest.mark.slow),
        pytest.param(signal.SIGUSR1, marks=pytest.mark.slow),
    ],
    ids=lambda s: signal.Signals(s).name,
)
def test_signal_saves_and_exits_nonzero(tmp_path, signum):
    run = tmp_path / "S"
    proc = _start([*RUN, "trainer.max_epochs=50", f"hydra.run.dir={run}"], tmp_path)
    _wait_for(run / "checkpoints" / "last.ckpt", proc)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err[-3000:]
    match = re.search(r"interrupted at step (\d+); resume with: samtune-train resume=(\S+)", out)
    assert match, out[-2000:]
    assert Path(match.group(2)) == run
    ckpt = safe_load(run / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == int(match.group(1))
    assert "SyntheticDataModule" in ckpt and ckpt["samtune"]["config"]["seed"] == 42
    assert not (run / ".samtune.lock").exists()
    assert not list((run / "checkpoints").glob(".*.tmp"))


def test_a_second_run_into_a_live_runs_folder_is_refused(tmp_path):
    from samtune.training.run_lock import RunLock, RunLockError

    with RunLock(tmp_path):
        with pytest.raises(
            RunLockError, match=f"{tmp_path} is in use by another run \\(pid {os.getpid()}"
        ):
            RunLock(tmp_path).acquire()
    RunLock(tmp_path).acquire().release()  # free again


def test_resume_refuses_overrides_that_change_the_run(tmp_path):
    from omegaconf import OmegaConf

    from samtune.training.resume import is_safe_override, resume_config

    assert is_safe_override("trainer.max_epochs") and is_safe_override("logger.wandb.offline")
    assert not is_safe_override("optim.lr") and not is_safe_override("model.name")
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    recorded = {
        "optim": {"lr": 0.1},
        "trainer": {"max_epochs": 2},
        "seed": 1,
        "paths": {"output_dir": "/elsewhere/run"},
        "callbacks": {"last": {"dirpath": "/elsewhere/run/checkpoints"}},
    }
    meta = {"model": {"name": "x", "image_size": 128}, "adapter": {}, "config": recorded}
    torch.save({"state_dict": {}, "samtune": meta}, ckpt)
    cfg = OmegaConf.create({"resume": str(tmp_path / "run"), "optim": {"lr": 1.0}, "seed": 1})
    with pytest.raises(ValueError, match="would change it: optim.lr=1.0"):
        resume_config(cfg, ["resume=x", "optim.lr=1.0"])
    cfg = OmegaConf.create(
        {"resume": str(tmp_path / "run"), "optim": {"lr": 0.1}, "trainer": {"max_epochs": 5}}
    )
    resumed, found, _ = resume_config(cfg, ["resume=x", "optim.lr=0.1", "trainer.max_epochs=5"])
    assert found == ckpt and resumed.trainer.max_epochs == 5 and resumed.optim.lr == 0.1
    # the run folder is where the checkpoint is now, not where it was recorded
    assert resumed.paths.output_dir == str(tmp_path / "run")
    assert resumed.callbacks.last.dirpath == str(tmp_path / "run" / "checkpoints")


def test_step_checkpoints_leave_out_the_batches_before_a_validation():
    def trainer(epoch, last, *, every_epochs=1, val_check_batch=4, validate=True):
        return SimpleNamespace(
            enable_validation=validate,
            check_val_every_n_epoch=every_epochs,
            current_epoch=epoch,
            is_last_batch=last,
            val_check_batch=val_check_batch,
        )

    assert validation_follows(trainer(0, True), 3)  # Lightning would skip it on resume
    assert not validation_follows(trainer(0, False), 2)
    assert validation_follows(trainer(0, False, val_check_batch=2), 1)  # within the epoch
    assert not validation_follows(trainer(0, True, every_epochs=10), 3)  # no validation there
    assert validation_follows(trainer(9, True, every_epochs=10), 3)
    assert not validation_follows(trainer(0, True, validate=False), 3)
    assert not validation_follows(trainer(0, False, val_check_batch=float("inf")), 3)
