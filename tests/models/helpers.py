"""Helpers shared by the export and predict tests: a Lightning checkpoint as samtune writes it,
and one set of prompts run through a ``SAM2ImagePredictor``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from samtune.models import build_sam2_model
from samtune.models.adapters import Adapter
from tests.helpers import SMALL_SIZE

NAME = "sam2.1_hiera_tiny"
SAM2_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"


def make_module(adapter: Adapter, checkpoint, init_seed: int = 0):
    """samtune's LightningModule on sam2.1_hiera_tiny at 128 px, with its trainable weights moved
    (as if trained)."""
    from samtune.models import ModelSpec
    from samtune.prompts import PromptSimulator
    from samtune.training.loss import SAM2Loss
    from samtune.training.module import SamTuneModule
    from samtune.training.optim import OptimConfig

    spec = ModelSpec(NAME, image_size=SMALL_SIZE, checkpoint=checkpoint, init_seed=init_seed)
    module = SamTuneModule(
        model=spec,
        adapter=adapter,
        prompts=PromptSimulator(),
        loss=SAM2Loss(),
        optim=OptimConfig(),
        run_info={"adapter": adapter.hydra_config()},
    )
    with torch.no_grad():  # "training": change what trains
        for p in module.model.parameters():
            if p.requires_grad:
                p.add_(0.01)
    return module


def save_module_checkpoint(module, path: Path) -> dict:
    """Save ``module`` as its LightningModule hooks do (``on_save_checkpoint``); return the dict."""
    checkpoint = {"state_dict": module.state_dict(), "global_step": 0}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return checkpoint


def make_lightning_checkpoint(
    path: Path, adapter: Adapter, *, image_size: int = SMALL_SIZE, seed: int = 0
) -> torch.nn.Module:
    """Write what samtune's LightningModule writes, with perturbed LoRA and decoder weights.

    Returns the adapted model whose weights were saved.
    """
    torch.manual_seed(seed)
    model = adapter.apply(build_sam2_model(NAME, image_size=image_size))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            elif name.startswith(("sam_mask_decoder.", "image_encoder.trunk.blocks.0.")):
                p.add_(torch.randn(p.shape, generator=g) * 0.01)
    model.eval()
    state = {f"model.{k}": v.clone() for k, v in model.state_dict().items()}
    state["loss.focal_weight"] = torch.tensor(20.0)  # other module state that export must ignore
    torch.save(
        {
            "epoch": 1,
            "global_step": 10,
            "state_dict": state,
            "samtune": {
                "model": {
                    "name": NAME,
                    "image_size": image_size,
                    "checkpoint": None,
                    "random_init": True,
                },
                "adapter": adapter.hydra_config(),
                "data": "nuclei_mini",
                "metrics": {"val/miou": torch.tensor(0.5), "val/dice": 0.6},
                "version": "0.1.0",
            },
        },
        path,
    )
    return model


# Prompts in original-image pixels of the 96 x 120 blob image.
POINTS = np.array([[60.0, 40.0], [20.0, 80.0]])
LABELS = np.array([1, 0])
BOX = np.array([30.0, 20.0, 90.0, 70.0])


def run_prompts(predictor, image: np.ndarray) -> dict[str, np.ndarray]:
    """Point, box, mask-input and multimask predictions of a SAM2ImagePredictor, as arrays."""
    predictor.set_image(image)
    out = {}
    m, s, low = predictor.predict(point_coords=POINTS, point_labels=LABELS, multimask_output=True)
    out.update(points_masks=m, points_scores=s)
    m, s, _ = predictor.predict(box=BOX, multimask_output=False)
    out.update(box_masks=m, box_scores=s)
    best = low[np.argmax(out["points_scores"])][None]  # feed back the best low-res logits
    m, s, _ = predictor.predict(
        point_coords=POINTS[:1], point_labels=LABELS[:1], mask_input=best, multimask_output=False
    )
    out.update(mask_input_masks=m, mask_input_scores=s)
    return out


def assert_same_predictions(got: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> None:
    """Masks equal, scores within 1e-6, for the same keys."""
    assert set(got) == set(ref)
    for key in ref:
        if key.endswith("_masks"):
            assert np.array_equal(got[key], ref[key]), key
        else:
            np.testing.assert_allclose(got[key], ref[key], rtol=0, atol=1e-6, err_msg=key)
