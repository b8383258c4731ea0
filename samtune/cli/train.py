"""``samtune-train``: fine-tune SAM 2.1 from a Hydra config (``configs/train.yaml``)."""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from samtune.cli._hydra import run_hydra_app
from samtune.training.memory import MemoryBudgetError
from samtune.training.run import run_training


def task(cfg: DictConfig) -> float | None:
    """Run one training job; the return value (best val mIoU) lets Hydra sweepers optimise it."""
    try:
        summary = run_training(cfg)
    except MemoryBudgetError as exc:  # a message for the user, not a traceback
        logging.getLogger("samtune.training.memory").error("%s", exc)
        raise SystemExit(1) from None
    return (summary.get("best_val") or {}).get("val/miou")


def main() -> None:
    """Console entry point."""
    run_hydra_app(task, "train")


if __name__ == "__main__":
    main()
