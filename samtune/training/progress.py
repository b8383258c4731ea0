"""Progress of a training run as plain log lines, for output that is not a terminal.

Lightning's progress bar redraws one line in place: in a file (SLURM, nohup, CI) it becomes one
endless line or nothing at all. :class:`ProgressLog` logs a line every ``every_n_steps`` training
steps instead (step/total, epoch, it/s, loss, ETA) and one line per validation; by default only
when standard output is not a terminal, where the bar stays.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any

import lightning as L

log = logging.getLogger(__name__)

WHEN = ("auto", "always", "never")


def stdout_is_terminal() -> bool:
    """Whether standard output is interactive: a terminal, or a Jupyter kernel (whose widgets draw
    progress bars), else a file, a pipe or a batch log."""
    if "ipykernel" in sys.modules:
        return True
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def format_duration(seconds: float) -> str:
    """``75`` -> ``1m15s``; ``3725`` -> ``1h02m``; unknown -> ``?``."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def _scalar(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):
        return None


class ProgressLog(L.Callback):
    """Logs ``step 40/400 (epoch 1/10) | 1.85 it/s | loss 3.214 | ETA 3m14s`` every N steps.

    Args:
        every_n_steps: a line every this many optimiser steps (and after the last one).
        when: ``auto`` (only when standard output is not a terminal, where Lightning's progress
            bar shows instead), ``always`` or ``never``.
    """

    def __init__(self, *, every_n_steps: int = 10, when: str = "auto") -> None:
        if int(every_n_steps) < 1:
            raise ValueError(
                f"callbacks.progress_log.every_n_steps must be a positive integer, got {every_n_steps!r}"
            )
        if when not in WHEN:
            raise ValueError(f"callbacks.progress_log.when must be one of {WHEN}, got {when!r}")
        self.every_n_steps = int(every_n_steps)
        self.when = when
        self._t0 = 0.0
        self._last_time = 0.0
        self._last_step = 0
        self._start_step = 0

    @property
    def active(self) -> bool:
        """Whether lines are logged in this process."""
        return self.when == "always" or (self.when == "auto" and not stdout_is_terminal())

    @staticmethod
    def total_steps(trainer: L.Trainer) -> int | None:
        """The run's planned optimiser steps (None when unknown, e.g. an iterable dataset)."""
        try:
            total = trainer.estimated_stepping_batches
        except Exception:  # no length to estimate from
            return None
        total = _scalar(total)
        return int(total) if total is not None and math.isfinite(total) else None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = self._last_time = time.perf_counter()
        self._start_step = self._last_step = int(trainer.global_step)
        if self.active and trainer.is_global_zero:
            total = self.total_steps(trainer)
            log.info(
                "training: %s steps, %s epoch(s); a progress line every %d steps",
                total if total is not None else "?",
                trainer.max_epochs if trainer.max_epochs not in (None, -1) else "?",
                self.every_n_steps,
            )

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        step = int(trainer.global_step)
        total = self.total_steps(trainer)
        last = total is not None and step >= total
        if not self.active or not trainer.is_global_zero or step == self._last_step:
            return
        if step % self.every_n_steps and not last:
            return
        log.info(self.line(trainer, outputs, step, total))

    def line(self, trainer: L.Trainer, outputs: Any, step: int, total: int | None) -> str:
        """The progress line after optimiser step ``step``; updates the rate window."""
        now = time.perf_counter()
        rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
        overall = (step - self._start_step) / max(now - self._t0, 1e-9)
        self._last_step, self._last_time = step, now
        loss = None
        if isinstance(outputs, dict):
            loss = _scalar(outputs.get("loss"))
        elif outputs is not None:
            loss = _scalar(outputs)
        if loss is None:
            loss = _scalar(trainer.callback_metrics.get("train/loss_step"))
        parts = [f"step {step}/{total if total is not None else '?'}"]
        if trainer.max_epochs not in (None, -1):
            parts[0] += f" (epoch {trainer.current_epoch + 1}/{trainer.max_epochs})"
        parts.append(f"{rate:.2f} it/s")
        parts.append(f"loss {loss:.4f}" if loss is not None else "loss -")
        if total is not None:
            eta = (total - step) / overall if overall > 0 else float("inf")
            parts.append(f"ETA {format_duration(eta)}")
        parts.append(f"elapsed {format_duration(now - self._t0)}")
        return " | ".join(parts)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.active or not trainer.is_global_zero or trainer.sanity_checking:
            return
        metrics = {
            k: _scalar(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")
        }
        shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()) if v is not None)
        log.info(
            "validation after epoch %d (step %d): %s",
            trainer.current_epoch + 1,
            trainer.global_step,
            shown or "no metric",
        )
