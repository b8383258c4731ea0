"""``samtune-train``: fine-tune SAM 2.1 from a Hydra config (``configs/train.yaml``)."""

from __future__ import annotations

import logging
import os

from omegaconf import DictConfig

from samtune.cli._hydra import run_hydra_app
from samtune.models.weights import is_none
from samtune.training.memory import MemoryBudgetError
from samtune.training.resume import find_checkpoint
from samtune.training.run import run_training
from samtune.training.run_lock import RECORD_SUBDIR_ENV


def task(cfg: DictConfig) -> float | None:
    """Run one training job; the return value (best val mIoU) lets Hydra sweepers optimise it."""
    try:
        summary = run_training(cfg)
    except MemoryBudgetError as exc:  # a message for the user, not a traceback
        logging.getLogger("samtune.training.memory").error("%s", exc)
        raise SystemExit(1) from None
    return (summary.get("best_val") or {}).get("val/miou")


def resume_run_dir_args(argv: list[str]) -> list[str]:
    """For ``resume=<run folder or .ckpt>``: the Hydra overrides that make the resumed job run in
    the original run folder (logs appended there, its recorded ``.hydra`` config kept)."""
    values = [a.split("=", 1)[1] for a in argv if a.startswith("resume=")]
    if not values or is_none(values[-1]) or any(a.startswith("hydra.run.dir=") for a in argv):
        return []
    _, run_dir = find_checkpoint(values[-1])
    return [f"hydra.run.dir={run_dir}", "hydra.output_subdir=null"]


def record_after_lock_args(argv: list[str]) -> list[str]:
    """The override that stops Hydra from writing the run's ``.hydra/`` record at start-up.

    Hydra writes ``config.yaml``, ``hydra.yaml`` and ``overrides.yaml`` before the task runs,
    so a second run into a folder a live run holds would rewrite the live run's record before
    the run lock refuses it. samtune writes the record itself once the lock is held
    (:func:`samtune.training.run_lock.write_hydra_record`), into the folder named by a
    ``hydra.output_subdir=`` the user gave (default ``.hydra``; ``null`` writes none).
    """
    given = [a.split("=", 1)[1] for a in argv if a.startswith("hydra.output_subdir=")]
    subdir = given[-1] if given else ".hydra"
    os.environ[RECORD_SUBDIR_ENV] = "" if is_none(subdir) else subdir
    return [] if given and is_none(subdir) else ["hydra.output_subdir=null"]


def main() -> None:
    """Console entry point."""
    import sys

    resumed = resume_run_dir_args(sys.argv[1:])
    sys.argv += resumed or record_after_lock_args(sys.argv[1:])
    run_hydra_app(task, "train")


if __name__ == "__main__":
    main()
