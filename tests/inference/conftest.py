"""A tuned model shared by the inference tests."""

from __future__ import annotations

import pytest

from samtune.models.adapters import LoRAAdapter
from samtune.models.export import export_checkpoint
from tests.helpers import SMALL_SIZE
from tests.models.helpers import make_lightning_checkpoint


@pytest.fixture(scope="package")
def tuned(tmp_path_factory):
    """A LoRA Lightning checkpoint at 128 px and its export."""
    root = tmp_path_factory.mktemp("tuned")
    ckpt = root / "lora.ckpt"
    make_lightning_checkpoint(ckpt, LoRAAdapter(rank=4), image_size=SMALL_SIZE, seed=3)
    return ckpt, export_checkpoint(ckpt, root / "lora.pt")
