"""How training checkpoints reach the disk and come back: atomically and safely.

:class:`AtomicCheckpointIO` is the Lightning ``CheckpointIO`` of every samtune run: a save goes
to a temporary file in the same folder and is renamed into place (an interrupted save leaves
the previous file intact), and a load goes through :func:`samtune.models.weights.safe_load`
(``weights_only=True``), also when Lightning resumes a run.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from samtune.io_atomic import atomic_write
from samtune.models.weights import safe_load


class AtomicCheckpointIO(TorchCheckpointIO):
    """Local checkpoints written atomically and read with ``weights_only=True``."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        """Write ``checkpoint`` to ``path`` through a temporary file in the same folder."""
        if storage_options is not None:
            raise TypeError(
                f"{type(self).__name__} takes no storage_options, got {storage_options!r}"
            )
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))

    def load_checkpoint(
        self,
        path: str | os.PathLike,
        map_location: Callable | None = None,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Read ``path`` with ``weights_only=True`` whatever is asked (to the CPU; Lightning moves
        the tensors where they belong)."""
        return safe_load(path, what="training checkpoint")
