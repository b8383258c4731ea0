"""The shipped last.ckpt callback: a checkpoint at the end of every epoch, after the epoch's
validation when it has one, and a resume from an epoch without validation that validates later."""

from __future__ import annotations

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.demos.boring_classes import BoringModel
from omegaconf import OmegaConf

from tests.helpers import REPO


class Recording(BoringModel):
    """Lightning's tiny model, noting each validation and each checkpoint save in ``events``."""

    def __init__(self, events: list[tuple[str, int, int]]) -> None:
        super().__init__()
        self.events = events

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.events.append(("val", self.current_epoch, int(self.global_step)))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self.events.append(("save", self.current_epoch, int(self.global_step)))


def _trainer(tmp_path, max_epochs: int) -> L.Trainer:
    cfg = OmegaConf.load(REPO / "configs" / "callbacks" / "default.yaml").last_checkpoint
    cfg.dirpath = str(tmp_path / "checkpoints")
    return L.Trainer(
        max_epochs=max_epochs,
        check_val_every_n_epoch=2,
        limit_train_batches=2,
        limit_val_batches=1,
        callbacks=[instantiate(cfg)],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
    )


def test_last_ckpt_at_every_epoch_end_after_its_validation(tmp_path):
    events: list[tuple[str, int, int]] = []
    torch.manual_seed(0)
    _trainer(tmp_path, max_epochs=3).fit(Recording(events))
    # epochs 0 and 2 do not validate (check_val_every_n_epoch=2), epoch 1 validates first
    assert events == [
        ("save", 0, 2),
        ("val", 1, 4),
        ("save", 1, 4),
        ("save", 2, 6),
    ]
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 6 and last["epoch"] == 2

    # resumed from the checkpoint of an epoch without validation: the next epoch validates once
    resumed: list[tuple[str, int, int]] = []
    _trainer(tmp_path, max_epochs=4).fit(
        Recording(resumed), ckpt_path=str(tmp_path / "checkpoints" / "last.ckpt")
    )
    assert resumed == [("val", 3, 8), ("save", 3, 8)]
