"""samtune-train writes its Hydra record (``.hydra/``) only once it holds the run lock: a second
run into a live run's folder is refused without touching the live run's files."""

from __future__ import annotations

import os
import subprocess
import sys

from samtune.training.run_lock import RunLock
from tests.helpers import REPO


def _train(args: list[str], cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="offline", PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "samtune.cli.train", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_refused_run_leaves_the_live_runs_record_alone(tmp_path):
    live = tmp_path / "live"
    record = live / ".hydra"
    record.mkdir(parents=True)
    files = {name: f"the live run's {name}\n" for name in ("config.yaml", "overrides.yaml")}
    for name, text in files.items():
        (record / name).write_text(text)
    before = sorted(p.name for p in live.rglob("*"))
    with RunLock(live):  # the live run (this process) holds the folder
        refused = _train(["experiment=smoke", f"hydra.run.dir={live}"], tmp_path)
    assert refused.returncode != 0
    assert "is in use by another run" in refused.stdout + refused.stderr
    for name, text in files.items():
        assert (record / name).read_text() == text
    after = sorted(p.name for p in live.rglob("*") if p.suffix != ".log")
    assert after == [b for b in before if not b.endswith(".log")]


def test_a_run_writes_its_record_once_it_holds_the_lock(tmp_path):
    run = tmp_path / "run"
    done = _train(
        [
            "experiment=smoke",
            "trainer.max_steps=1",
            "evaluate_after_training=false",
            f"hydra.run.dir={run}",
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "task_name: smoke" in (run / ".hydra" / "config.yaml").read_text()
    assert "trainer.max_steps=1" in (run / ".hydra" / "overrides.yaml").read_text()
    assert "output_subdir" in (run / ".hydra" / "hydra.yaml").read_text()
    assert not list((run / ".hydra").glob(".*.tmp"))
