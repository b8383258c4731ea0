"""The LightningModule's validation runs the evaluation protocols and gives the numbers of the
protocols' definition; its checkpoints keep the ``model.<sam2 key>`` names."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from samtune.evaluation.batching import ObjectBatch
from samtune.evaluation.clicks import center_points
from samtune.evaluation.protocols import ProtocolRunner
from samtune.models import ModelSpec
from samtune.models.adapters import FrozenEncoder
from samtune.models.weights import model_from_training_checkpoint
from samtune.prompts import PromptSimulator
from samtune.prompts.sampling import mask_to_box
from samtune.segmenter.sam2 import decode, encode, normalize_images, upsample_logits
from samtune.training.loss import SAM2Loss
from samtune.training.module import VAL_PROTOCOLS, SamTuneModule
from samtune.training.optim import OptimConfig
from tests.helpers import make_blob_sample

S = 128


def _module(checkpoint) -> SamTuneModule:
    return SamTuneModule(
        model=ModelSpec("sam2.1_hiera_tiny", image_size=S, checkpoint=str(checkpoint)),
        adapter=FrozenEncoder(),
        prompts=PromptSimulator(),
        loss=SAM2Loss(),
        optim=OptimConfig(),
        num_overlays=0,
    )


def _batch(seeds: tuple[int, ...], counts: tuple[int, ...]) -> dict:
    samples = [make_blob_sample(size=(S, S), n=max(n, 1), seed=s) for s, n in zip(seeds, counts)]
    images = torch.stack([torch.from_numpy(s.image).permute(2, 0, 1) for s in samples])
    masks = [torch.from_numpy(s.masks[:n]) for s, n in zip(samples, counts)]
    return {"images": normalize_images(images), "masks": masks, "meta": [{} for _ in samples]}


def _reference_ious(model: torch.nn.Module, features, batch: dict) -> dict[str, torch.Tensor]:
    """Validation as defined: point1 = the center click, best of 3 masks by predicted IoU; box =
    the tight box, one mask; IoU at input resolution, 1 when both masks are empty."""
    gt = torch.cat(batch["masks"]).bool()
    idx = torch.cat([torch.full((len(m),), i) for i, m in enumerate(batch["masks"])])
    with torch.no_grad():
        pts = center_points(gt)[:, None]
        labels = torch.ones(pts.shape[:2], dtype=torch.int32)
        point1 = decode(model, features, idx, pts, labels, multimask_output=True).best()[0]
        box = decode(
            model, features, idx, None, None, boxes=mask_to_box(gt), multimask_output=False
        )
    out = {}
    for name, logits in (("point1", point1), ("box", box.low_res_logits)):
        pred = upsample_logits(logits, (S, S))[:, 0] > 0
        inter = (pred & gt).flatten(1).sum(1).double()
        union = (pred | gt).flatten(1).sum(1).double()
        out[name] = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    return out


def test_validation_gives_the_protocol_numbers_and_keeps_the_checkpoint_keys(
    tiny_checkpoint, tiny_state_dict, tmp_path
):
    module = _module(tiny_checkpoint)
    batch = _batch((0, 1, 2), (3, 0, 2))  # an image without objects too
    module.validation_step(batch, 0)
    with torch.no_grad():
        features = encode(module.model, batch["images"])
    ref = _reference_ious(module.model, features, batch)
    objects = ObjectBatch.from_masks(batch["masks"])
    assert objects.img_idx.tolist() == [0, 0, 0, 2, 2]
    runner = ProtocolRunner(module.segmenter, features, objects)
    for protocol in VAL_PROTOCOLS:
        got = float(module.val_miou[protocol].compute())
        print(protocol, "validation", got, "reference", float(ref[protocol].mean()))
        assert got == pytest.approx(float(ref[protocol].mean()), abs=1e-6)
        with torch.no_grad():  # object by object through the evaluation protocol code
            ious = runner.ious(runner.run(protocol, max_clicks=1).preds)
        torch.testing.assert_close(ious, ref[protocol], rtol=0, atol=1e-12)
    empty, full = torch.zeros(1, S, S, dtype=torch.bool), torch.ones(1, S, S, dtype=torch.bool)
    runner.batch = ObjectBatch.from_masks([torch.cat([empty, full])])
    assert runner.ious([torch.cat([empty, empty])]).tolist() == [1.0, 0.0]

    # --- checkpoints: a file in the ``model.<sam2 key>`` format loads strictly into the module
    # and through model_from_training_checkpoint; the segmenter is a view that adds no key
    old = {f"model.{k}": v.clone() + 1 for k, v in tiny_state_dict.items()}
    assert set(module.state_dict()) == set(old)
    module.load_state_dict(old, strict=True)
    assert module.segmenter.model is module.model
    name = "sam_mask_decoder.iou_token.weight"
    assert torch.equal(module.segmenter.model.state_dict()[name], old[f"model.{name}"])
    meta = {
        "model": {"name": "sam2.1_hiera_tiny", "image_size": S, "checkpoint": None},
        "adapter": {"_target_": "samtune.models.adapters.FullFineTune"},
        "metrics": {"val/miou": 0.5, "val/miou_point1": 0.4, "val/miou_box": 0.6},
    }
    torch.save({"state_dict": old, "samtune": meta}, tmp_path / "old.ckpt")
    plain, info = model_from_training_checkpoint(tmp_path / "old.ckpt")
    assert torch.equal(plain.state_dict()[name], old[f"model.{name}"])
    assert info["metrics"] == meta["metrics"]
    module.best_metrics = meta["metrics"]  # as a resumed run restores them
    assert float(module.val_miou_best.compute()) == pytest.approx(0.5)
    assert module.best_metrics == meta["metrics"]

    # --- a run with neither max_epochs nor max_steps has no schedule length: a named error
    module._trainer = SimpleNamespace(estimated_stepping_batches=float("inf"))
    with pytest.raises(ValueError, match=r"set trainer\.max_epochs or trainer\.max_steps"):
        module.configure_optimizers()
