"""Interrupted runs save their state and say how to go on.

SIGTERM (also what SLURM sends at the time limit), SIGINT (Ctrl+C) and SIGUSR1 (the pre-timeout
signal of ``sbatch --signal=USR1@...``) all make Lightning stop after the current training
step; :class:`InterruptCheckpoint` then writes ``last.ckpt`` and :func:`interrupted_message`
is the one line the run prints before it exits with ``128 + signal number``.

Under SLURM with Lightning's auto-requeue (``SLURMEnvironment``), SIGUSR1 stays Lightning's:
it saves an ``hpc_ckpt_*.ckpt`` and requeues the job.

A signal that lands on a training batch after which a validation is due stops the run before (or
during) that validation. Lightning, resumed from such a checkpoint, would count the validation
as done and skip it; the checkpoint instead records it as started and not finished, so the
resumed run validates first, from its first batch, as the uninterrupted run did.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any

import lightning as L

from samtune.training.resume import validation_follows

log = logging.getLogger(__name__)

VAL_PROGRESS = "epoch_loop.val_loop.batch_progress"

HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


def interrupted_message(step: int, run_dir: str | Path) -> str:
    """The line an interrupted run prints."""
    return f"interrupted at step {step}; resume with: samtune-train resume={run_dir}"


class InterruptCheckpoint(L.Callback):
    """Turns SIGINT and SIGUSR1 into Lightning's graceful stop (as for SIGTERM) and saves
    ``<dirpath>/last.ckpt`` when a run stops on one of them.

    Args:
        dirpath: the run's checkpoint folder.
        filename: name of the checkpoint written on interruption.
    """

    def __init__(self, dirpath: str | Path, filename: str = "last.ckpt") -> None:
        self.path = Path(dirpath) / filename
        self.signum: int | None = None
        self.saved_step: int | None = None
        self._previous: dict[int, Any] = {}
        self._trainer: L.Trainer | None = None
        self._validation_due = False
        self._saving = False

    def _handler(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl+C stops at once
        self.signum = signum
        log.warning("received %s: stopping after the current step", signal.Signals(signum).name)
        if self._trainer is not None:
            self._trainer._signal_connector.received_sigterm = True

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from lightning.pytorch.plugins.environments import SLURMEnvironment

        self._trainer = trainer
        env = trainer._accelerator_connector.cluster_environment
        requeue = isinstance(env, SLURMEnvironment) and env.auto_requeue
        for signum in HANDLED:
            if signum == signal.SIGUSR1 and requeue:
                continue  # Lightning saves and requeues
            if signum == signal.SIGTERM:
                # Lightning's own handler sets the stop flag; remember which signal came
                previous = signal.getsignal(signum)
                self._previous[signum] = previous

                def chained(s: int, f: Any, previous: Any = previous) -> None:
                    self.signum = s
                    if callable(previous):
                        previous(s, f)

                signal.signal(signum, chained)
                continue
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handler)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        self._validation_due = validation_follows(trainer, idx)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validation_due = False

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self._saving and self._validation_due:
            mark_validation_unfinished(checkpoint)
            log.info(
                "the validation due at step %d runs first when the run resumes", trainer.global_step
            )

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if not isinstance(exception, SIGTERMException | KeyboardInterrupt):
            return
        if self.signum is None:
            self.signum = (
                signal.SIGINT if isinstance(exception, KeyboardInterrupt) else signal.SIGTERM
            )
        self._saving = True
        try:
            trainer.save_checkpoint(self.path)
        finally:
            self._saving = False
        self.saved_step = int(trainer.global_step)
        log.warning("saved %s at step %d", self.path, self.saved_step)

    @property
    def exit_code(self) -> int:
        """``128 + signal number``, the shell's convention for a process stopped by a signal."""
        return 128 + int(self.signum or signal.SIGTERM)


def mark_validation_unfinished(checkpoint: dict[str, Any]) -> None:
    """Record in ``checkpoint``'s loop state that the due validation started and did not finish.

    Lightning resumes a validation it finds started but unfinished (one batch started, none
    processed); the batches an interrupted validation got through are taken back, so it runs in
    full. Its numbers were never logged: the interrupted validation left before its end.
    """
    loops = checkpoint.get("loops", {}).get("fit_loop", {})
    progress = loops.get(VAL_PROGRESS)
    if progress is None:
        return
    total, current = progress["total"], progress["current"]
    done = int(total["completed"]) - int(current["completed"])
    total.update(ready=done + 1, started=done + 1, processed=done, completed=done)
    current.update(ready=1, started=1, processed=0, completed=0)
    progress["is_last_batch"] = False
