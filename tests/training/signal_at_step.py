"""A test callback that sends its own process a signal at the end of a given training step, as a
cluster's scheduler would at an unlucky moment."""

from __future__ import annotations

import os
import signal
from typing import Any

import lightning as L


class SignalAtStep(L.Callback):
    """Send ``signal`` (a name such as ``SIGTERM``) to this process once, at the end of the
    training batch after which ``trainer.global_step`` equals ``step``."""

    def __init__(self, step: int, signal: str = "SIGTERM") -> None:
        self.step = int(step)
        self.signum = int(getattr(__import__("signal"), signal))
        self.sent = False

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        if not self.sent and trainer.global_step == self.step:
            self.sent = True
            os.kill(os.getpid(), self.signum)


__all__ = ["SignalAtStep", "signal"]
