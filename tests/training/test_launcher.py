"""Sweeps through Hydra's submitit launcher: two jobs on the local executor end to end, the SLURM
job script a sweep of 4 sizes x 2 adapters would submit (sbatch replaced by a recorder), and the
requeue at SLURM's pre-timeout signal (SLURM simulated)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = dict(
        os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", WANDB_MODE="offline", **env
    )
    return subprocess.run(
        [sys.executable, "-m", "samtune.cli.train", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_a_two_job_sweep_runs_through_the_local_submitit_executor(tmp_path):
    sweep = tmp_path / "sweep"
    proc = _run(
        [
            "-m",
            "hydra/launcher=local",
            "experiment=smoke",
            "adapter=frozen",
            "seed=1,2",
            "trainer.max_steps=2",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "Submitit 'local' sweep output dir" in proc.stdout + proc.stderr
    job_logs = sorted((sweep / ".submitit").glob("*/*_0_log.out"))
    assert len({p.parent.name for p in job_logs}) == 2, job_logs  # two jobs, two processes
    for log in job_logs:
        assert "samtune: training finished" in log.read_text(), log
    for num, seed in ((0, 1), (1, 2)):
        run = sweep / str(num)
        summary = json.loads((run / "summary.json").read_text())
        assert summary["output_dir"] == str(run)
        assert summary["adapter"] == "frozen" and summary["best_val"]
        assert Path(summary["last_checkpoint"]).is_file()
        results = json.loads((run / "eval" / "results.json").read_text())
        assert results["summary"]["seed"] == seed, results["summary"]


def _recorder(folder: Path) -> Path:
    """``sbatch`` and ``srun`` stand-ins: sbatch keeps the job script it is given and fails."""
    folder.mkdir()
    scripts = {
        "sbatch": '#!/bin/sh\ncp "$1" "$SBATCH_RECORD"\necho "sbatch: test double" >&2\nexit 1\n',
        "srun": "#!/bin/sh\nexit 1\n",
    }
    for name, text in scripts.items():
        path = folder / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return folder


def test_a_slurm_sweep_of_4_sizes_x_2_adapters_is_one_job_array(tmp_path):
    record = tmp_path / "job.sh"
    fake = _recorder(tmp_path / "bin")
    # the README's command ("On a cluster")
    proc = _run(
        [
            "-m",
            "hydra/launcher=slurm",
            "hydra.launcher.partition=gpu",
            "hydra.launcher.gpus_per_node=4",
            "trainer=ddp",
            "model=sam2.1_hiera_tiny,sam2.1_hiera_small,sam2.1_hiera_base_plus,sam2.1_hiera_large",
            "adapter=frozen,lora",
        ],
        cwd=tmp_path,
        SBATCH_RECORD=str(record),
        PATH=f"{fake}{os.pathsep}{os.environ['PATH']}",
    )
    assert proc.returncode != 0 and "sbatch: test double" in proc.stderr
    script = record.read_text()
    for line in (
        "#SBATCH --array=0-7%8",  # 4 sizes x 2 adapters, one array task each
        "#SBATCH --partition=gpu",
        "#SBATCH --nodes=1",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --ntasks-per-node=4",  # one DDP rank per GPU
        "#SBATCH --signal=USR1@120",  # Lightning's requeue signal, 2 minutes before the limit
        "#SBATCH --time=1440",
        "#SBATCH --mem=64GB",
    ):
        assert line in script.splitlines(), (line, script)
    assert "-m submitit.core._submit" in script


@pytest.mark.slow
def test_a_requeued_slurm_job_restores_the_state_saved_at_the_signal(tmp_path):
    """SLURM simulated by its environment variables and an ``scontrol`` that records the requeue
    and ends the job as SLURM would; the requeued job is the same command run again."""
    fake = tmp_path / "bin"
    fake.mkdir()
    scontrol = fake / "scontrol"
    scontrol.write_text('#!/bin/sh\necho "$@" >> "$SCONTROL_RECORD"\nkill -9 $PPID\n')
    scontrol.chmod(0o755)
    record, run = tmp_path / "scontrol.txt", tmp_path / "run"
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        OMP_NUM_THREADS="1",
        WANDB_MODE="offline",
        PATH=f"{fake}{os.pathsep}{os.environ['PATH']}",
        SCONTROL_RECORD=str(record),
        SLURM_NTASKS="1",
        SLURM_NTASKS_PER_NODE="1",
        SLURM_JOB_NAME="train",
        SLURM_JOB_ID="4242",
        SLURM_PROCID="0",
        SLURM_LOCALID="0",
        SLURM_NODEID="0",
        SLURM_NNODES="1",
        SLURM_NODELIST="localhost",
    )
    command = [
        sys.executable,
        "-m",
        "samtune.cli.train",
        "experiment=smoke",
        "adapter=frozen",
        "data.augment=null",
        "data.num_train=8",
        "trainer.limit_train_batches=null",
        "trainer.max_epochs=4",
        "trainer.precision=32-true",
        "speed.embedding_cache=null",
        "evaluate_after_training=false",
        f"hydra.run.dir={run}",
    ]
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=log)
        deadline = time.time() + 600
        while not (run / "checkpoints" / "last.ckpt").is_file() and first.poll() is None:
            assert time.time() < deadline, "no checkpoint after 10 minutes"
            time.sleep(0.5)
        first.send_signal(signal.SIGUSR1)  # what SLURM sends signal_delay_s before the limit
        assert first.wait(timeout=600) == -signal.SIGKILL, (tmp_path / "first.log").read_text()
    assert record.read_text().split() == ["requeue", "4242"]
    saved = torch.load(run / "hpc_ckpt_1.ckpt", map_location="cpu", weights_only=True)
    assert 4 <= saved["global_step"] < 16

    again = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-4000:]
    assert f"Restored all states from the checkpoint at {run / 'hpc_ckpt_1.ckpt'}" in (
        again.stdout + again.stderr
    )
    final = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert final["global_step"] == 16 and final["epoch"] == 3
