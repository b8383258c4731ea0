"""The LightningModule's validation is ``samtune-eval``'s evaluation: the same code, samples at
their original resolution, float32 whatever the training precision; its checkpoints keep the
``model.<sam2 key>`` names."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from samtune.data.sample import Sample
from samtune.evaluation import Evaluator
from samtune.models import ModelSpec
from samtune.models.adapters import FrozenEncoder
from samtune.models.weights import model_from_training_checkpoint
from samtune.prompts import PromptSimulator
from samtune.segmenter.base import Decoded, best_index
from samtune.training.loss import SAM2Loss
from samtune.training.module import VAL_PROTOCOLS, SamTuneModule
from samtune.training.optim import OptimConfig
from tests.helpers import make_blob_sample

S = 128


def _module(checkpoint, **kwargs) -> SamTuneModule:
    return SamTuneModule(
        model=ModelSpec("sam2.1_hiera_tiny", image_size=S, checkpoint=str(checkpoint)),
        adapter=FrozenEncoder(),
        prompts=PromptSimulator(),
        loss=SAM2Loss(),
        optim=OptimConfig(),
        num_overlays=0,
        **kwargs,
    )


def _samples() -> list[Sample | None]:
    """Non-square images of other sizes than the model's input, an image whose objects are all
    below ``min_object_area`` at 128 px, and an image the dataset skipped (None)."""
    samples = [
        make_blob_sample(size=(96, 160), n=3, seed=0),
        make_blob_sample(size=(200, 90), n=2, seed=1),
        None,
    ]
    tiny = make_blob_sample(size=(120, 120), n=1, seed=2)
    tiny.masks[:] = False
    tiny.masks[0, 60, 60] = True  # 1 pixel: below min_object_area=4 once resized
    samples.append(tiny)
    return samples


def _validate(module: SamTuneModule, samples: list, min_object_area: int | None) -> dict:
    module.val_min_object_area = min_object_area
    module.eval()  # as Lightning puts it for validation
    module.validation_step({"samples": samples, "indices": torch.arange(len(samples))}, 0)
    values = {p: float(m.compute()) for p, m in module.val_miou.items()}
    for metric in module.val_miou.values():
        metric.reset()
    return values


def _evaluate(module: SamTuneModule, samples: list, min_object_area: int | None) -> dict:
    evaluator = Evaluator(protocols=VAL_PROTOCOLS, progress=False, gallery_size=0)
    result = evaluator.evaluate(module.model, samples, min_object_area=min_object_area)
    return {p: a["miou"] for p, a in result.aggregates().items()}


def test_validation_equals_evaluation_on_original_resolution_samples(tiny_checkpoint):
    module = _module(tiny_checkpoint)
    samples = _samples()
    val = _validate(module, samples, min_object_area=4)
    ev = _evaluate(module, samples, min_object_area=4)
    print("validation", val, "evaluation", ev)
    assert set(val) == set(ev) == set(VAL_PROTOCOLS)
    for protocol in VAL_PROTOCOLS:
        assert val[protocol] == pytest.approx(ev[protocol], abs=1e-6)
    # the one-pixel object is left out by both; counted as a small object in validation
    assert module._seen["val"] == [3, 5, 1]
    # without the area filter the one-pixel object is scored by both, and the numbers move
    module._seen["val"] = [0, 0, 0]
    val_all = _validate(module, samples, min_object_area=None)
    ev_all = _evaluate(module, samples, min_object_area=None)
    for protocol in VAL_PROTOCOLS:
        assert val_all[protocol] == pytest.approx(ev_all[protocol], abs=1e-6)
    assert module._seen["val"] == [3, 6, 0]
    assert any(val_all[p] != pytest.approx(val[p], abs=1e-9) for p in VAL_PROTOCOLS)


def test_validation_leaves_ignored_pixels_out_as_evaluation_does(tiny_checkpoint):
    module = _module(tiny_checkpoint)
    plain = [make_blob_sample(size=(96, 160), n=2, seed=4)]
    ignored = []
    for sample in plain:
        ignore = np.zeros(sample.masks.shape[1:], bool)
        ignore[:, : sample.masks.shape[2] // 2] = True  # the left half is not labelled
        ignored.append(
            Sample(image=sample.image, masks=sample.masks, meta=dict(sample.meta), ignore=ignore)
        )
    val, ev = _validate(module, ignored, None), _evaluate(module, ignored, None)
    for protocol in VAL_PROTOCOLS:
        assert val[protocol] == pytest.approx(ev[protocol], abs=1e-6)
    before = _validate(module, plain, None)
    assert any(val[p] != pytest.approx(before[p], abs=1e-9) for p in VAL_PROTOCOLS)


def _saturate_iou_head(model: torch.nn.Module) -> list[float]:
    """Make the IoU head output near -17 for every mask (sigmoid after), the three multimask
    candidates apart by less than bf16's step there (0.125): bf16 ties them, fp32 does not."""
    last = model.sam_mask_decoder.iou_prediction_head.layers[-1]
    logits = [-17.0, -17.06, -17.04, -17.01]  # token 0 is the single-mask output
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor(logits))
    return logits


def test_a_saturated_iou_head_under_bf16_autocast_validates_as_fp32_evaluation(tiny_checkpoint):
    module = _module(tiny_checkpoint)
    logits = _saturate_iou_head(module.model)
    # the premise: in bf16 the three candidates tie (the first would be taken), in fp32 the
    # third is the best
    candidates = torch.tensor([logits[1:]])
    assert best_index(candidates.bfloat16().float()).item() == 0
    assert best_index(candidates).item() == 2
    samples = [s for s in _samples()[:2]]
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as Lightning's bf16-mixed wraps the step
        val = _validate(module, samples, min_object_area=4)
    ev = _evaluate(module, samples, min_object_area=4)
    print("bf16 validation", val, "fp32 evaluation", ev)
    for protocol in VAL_PROTOCOLS:
        assert val[protocol] == pytest.approx(ev[protocol], abs=1e-6)
    # ... and the choice matters here: the first candidate scores differently from the third
    evaluator = Evaluator(protocols=("point1",), progress=False, gallery_size=0)
    result = evaluator.evaluate(module.model, samples, min_object_area=4)
    assert all(r.pred_iou == pytest.approx(1 / (1 + np.exp(17.01)), rel=1e-3) for r in result.rows)

    # the training step's mask choice under bf16 autocast also sees fp32 scores
    features = module.encode_images(module.segmenter.preprocess([samples[0].image]))
    coords = torch.tensor([[[40.0, 50.0]]])
    labels = torch.ones(1, 1, dtype=torch.int32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module.segmenter.decode(
            features, torch.zeros(1, dtype=torch.long), coords, labels, multimask_output=True
        )
    assert out.iou_pred.dtype == torch.float32
    assert best_index(out.iou_pred).item() == 2
    assert not torch.is_autocast_enabled("cpu")  # the heads' hooks restored the state


def test_ties_go_to_the_lowest_candidate():
    iou = torch.tensor([[0.5, 0.5, 0.2], [0.1, 0.3, 0.3], [0.2, 0.1, 0.9]])
    assert best_index(iou).tolist() == [0, 1, 2]
    low = torch.arange(3 * 3 * 4 * 4, dtype=torch.float32).reshape(3, 3, 4, 4)
    logits, scores = Decoded(low, iou, torch.zeros(3, 1)).best()
    assert torch.equal(logits[:, 0], low[[0, 1, 2], [0, 1, 2]])
    assert scores.tolist() == pytest.approx([0.5, 0.3, 0.9])


def test_a_lossy_embedding_cache_does_not_serve_validation(tiny_checkpoint):
    from samtune.segmenter.cache import EmbeddingCache

    samples = _samples()[:2]
    lossy = _module(tiny_checkpoint, embedding_cache=EmbeddingCache(storage_dtype="bfloat16"))
    exact = _module(tiny_checkpoint, embedding_cache=EmbeddingCache(storage_dtype="float32"))
    ev = _evaluate(lossy, samples, min_object_area=4)
    for module in (lossy, exact):
        for _ in range(2):  # the second pass would be served by the cache
            val = _validate(module, samples, min_object_area=4)
            for protocol in VAL_PROTOCOLS:
                assert val[protocol] == pytest.approx(ev[protocol], abs=1e-6)
    assert lossy.embedding_cache.stats.hits == lossy.embedding_cache.stats.misses == 0
    assert exact.embedding_cache.stats.hits == 2  # float32: exact, so it serves
    assert lossy.segmenter.embedding_cache is lossy.embedding_cache  # put back


def test_checkpoint_keys_stay_the_official_ones(tiny_checkpoint, tiny_state_dict, tmp_path):
    module = _module(tiny_checkpoint)
    # a file in the ``model.<sam2 key>`` format loads strictly into the module and through
    # model_from_training_checkpoint; the segmenter is a view that adds no key
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
