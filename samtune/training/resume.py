"""``samtune-train resume=<run folder or .ckpt>``: continue a run from its own record.

The config comes from the checkpoint (what the run was started with), never from today's
defaults; the weights, optimiser, scheduler, loop position, data order and RNG states from the
checkpoint itself (Lightning's ``ckpt_path`` plus samtune's own state); the CSV log is continued
and a W&B run is resumed under the same id.

Command-line values still win for the keys in :data:`SAFE_OVERRIDES` (how long to train, where
to run, what to log and evaluate); any other override (model, adapter, data, optimiser, loss,
prompts, seed, ...) that differs from the recorded value would change the run under way, so it
is refused with an error naming it (restating the recorded value is accepted).
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from samtune.models.state_dicts import CheckpointError
from samtune.models.weights import read_training_checkpoint

log = logging.getLogger(__name__)

LAST = "last.ckpt"
# Dotted keys (and their sub-keys) a resumed run takes from the command line.
SAFE_OVERRIDES = (
    "resume",
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.max_time",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.enable_progress_bar",
    "trainer.log_every_n_steps",
    "data.num_workers",
    "optim.on_resume_length_change",
    "callbacks",
    "logger",
    "evaluation",
    "evaluate_after_training",
    "speed.embedding_cache.cache_dir",
    "speed.embedding_cache.max_memory_mb",
)


def find_checkpoint(resume: str | os.PathLike) -> tuple[Path, Path]:
    """The checkpoint to resume from and the run folder it belongs to.

    ``resume`` is a run folder (its ``checkpoints/last.ckpt`` is used) or a ``.ckpt`` file (its
    run folder is the parent of its ``checkpoints`` folder).
    """
    path = Path(resume).expanduser().resolve()
    if path.is_dir():
        ckpt = path / "checkpoints" / LAST
        if not ckpt.is_file():
            raise CheckpointError(
                f"resume={resume}: no checkpoints/{LAST} in that folder; pass a run folder of "
                "samtune-train or a .ckpt file"
            )
        return ckpt, path
    if not path.is_file():
        raise CheckpointError(f"resume={resume}: no such run folder or checkpoint")
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return path, run_dir


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def is_safe_override(key: str) -> bool:
    """Whether a command-line key may change a resumed run (see :data:`SAFE_OVERRIDES`)."""
    return any(key == k or key.startswith(k + ".") for k in SAFE_OVERRIDES)


def _plain(value: Any) -> Any:
    from omegaconf import Container

    return OmegaConf.to_container(value, resolve=True) if isinstance(value, Container) else value


def _relocate(value: Any, old: str, new: str) -> Any:
    if isinstance(value, dict):
        return {k: _relocate(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_relocate(v, old, new) for v in value]
    if isinstance(value, str) and old and (value == old or value.startswith(old + "/")):
        return new + value[len(old) :]
    return value


def resume_config(cfg: DictConfig, overrides: list[str]) -> tuple[DictConfig, Path, dict]:
    """The config of the run that ``cfg.resume`` names, with the safe command-line overrides.

    Args:
        cfg: the composed config of this invocation (holds ``resume`` and the overrides' values).
        overrides: the command-line overrides (Hydra's ``overrides.task``).

    Returns:
        The config to run, the checkpoint to resume from, and the checkpoint's samtune metadata.

    Raises:
        ValueError: for an override that would change the run (naming it).
        CheckpointError: for a missing or unreadable checkpoint, or one without a recorded config.
    """
    ckpt_path, run_dir = find_checkpoint(cfg.resume)
    meta = read_training_checkpoint(ckpt_path)["samtune"]
    recorded = meta.get("config")
    if not isinstance(recorded, dict) or not recorded:
        raise CheckpointError(f"{ckpt_path} has no recorded config (ckpt['samtune']['config'])")
    old_dir = str(OmegaConf.select(OmegaConf.create(recorded), "paths.output_dir") or "")
    resumed = OmegaConf.create(_relocate(recorded, old_dir, str(run_dir)))
    unsafe = []
    for override in overrides:
        key = _override_key(override)
        if key == "resume" or key.startswith("hydra."):
            continue
        value = OmegaConf.select(cfg, key)
        if key == "experiment":  # an experiment file changes many keys at once
            unsafe.append(override)
        elif is_safe_override(key):
            OmegaConf.update(resumed, key, value, force_add=True)
        elif _plain(value) != _plain(OmegaConf.select(resumed, key)):
            unsafe.append(override)  # restating the recorded value changes nothing
    if unsafe:
        raise ValueError(
            f"resume={cfg.resume} continues the run with its recorded config; these overrides "
            f"would change it: {', '.join(unsafe)}. Allowed: {', '.join(SAFE_OVERRIDES)}"
        )
    resumed.resume = str(ckpt_path)
    if meta.get("data"):  # this invocation's Hydra choices are today's defaults, not the run's
        resumed.data_name = str(meta["data"])
    wandb_id = meta.get("wandb_id")
    wandb_cfg = OmegaConf.select(resumed, "logger.wandb")
    if wandb_id and wandb_cfg is not None:
        wandb_cfg.id = str(wandb_id)
        wandb_cfg.resume = "allow"
    log.info("resuming %s from %s", run_dir, ckpt_path)
    return resumed, ckpt_path, meta


def task_overrides() -> list[str]:
    """The command-line overrides of the running Hydra job (empty outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


class StepCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint(every_n_train_steps=N)`` that leaves out the batches after which
    validation runs.

    Lightning resumed from a checkpoint written at such a batch (before the validation) takes
    the validation as done and skips it, so a run killed there would lose that epoch's
    validation. The epoch-end checkpoint, written after the validation, covers those batches.
    """

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if validation_follows(trainer, batch_idx):
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


def validation_follows(trainer: Any, batch_idx: int) -> bool:
    """Whether the trainer validates right after training batch ``batch_idx``: in an epoch that
    validates, after its last batch, or every ``val_check_batch`` batches when validation runs
    within epochs."""
    if not trainer.enable_validation:
        return False
    every_epochs = trainer.check_val_every_n_epoch
    if every_epochs is not None and (trainer.current_epoch + 1) % every_epochs != 0:
        return False
    if trainer.is_last_batch:
        return True
    every = trainer.val_check_batch
    return isinstance(every, int) and every >= 1 and (batch_idx + 1) % every == 0


class ContinueCsvLog(L.Callback):
    """Puts the rows of an earlier attempt (up to the resumed step) back into ``metrics.csv``,
    which Lightning's CSVLogger clears when it starts."""

    def __init__(self, metrics_csv: str | os.PathLike, before_step: int) -> None:
        self.header: list[str] = []
        self.rows: list[dict[str, str]] = []
        path = Path(metrics_csv)
        if path.is_file():
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                self.header = list(reader.fieldnames or [])
                self.rows = [r for r in reader if _step(r) < before_step]

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        from lightning.pytorch.loggers import CSVLogger

        if not self.header:
            return
        for lg in trainer.loggers:
            if isinstance(lg, CSVLogger):
                writer = lg.experiment  # creating it clears the file
                with open(writer.metrics_file_path, "w", newline="") as f:
                    out = csv.DictWriter(f, fieldnames=self.header)
                    out.writeheader()
                    out.writerows(self.rows)
                writer.metrics_keys = list(self.header)


def _step(row: dict[str, str]) -> float:
    try:
        return float(row.get("step") or 0)
    except ValueError:
        return 0.0
