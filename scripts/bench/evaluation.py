"""Section ``eval``: samtune's Evaluator (``point1``) vs a loop over the official predictor."""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate

from samtune.data.sample import Sample
from samtune.evaluation import center_points
from samtune.segmenter.sam2 import feature_sizes
from scripts.bench.common import autocast, sync, table
from scripts.bench.compose import (
    compose_config,
    data_overrides,
    load_samples,
    model_overrides,
    quiet_random_init,
)


def official_predictor(model: torch.nn.Module) -> Any:
    """sam2's ``SAM2ImagePredictor`` around ``model``; below 1024 px its hard-coded feature sizes
    (a private attribute of sam2's) are replaced by the model's: the class cannot run otherwise."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    predictor = SAM2ImagePredictor(model)
    if int(model.image_size) != 1024:
        predictor._bb_feat_sizes = feature_sizes(model)
    return predictor


def measure(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Objects/s of the composed ``evaluation`` config (protocol ``point1``; its default batching,
    then every object of 4 images per decoder call) and of the official predictor, one object per
    ``predict``, on the same model, images and clicks."""
    quiet_random_init()
    cfg = compose_config(
        "eval",
        [
            *model_overrides(args.eval_size, args.eval_image_size),
            *data_overrides(args.data, args.eval_images),
        ],
    )
    _, samples = load_samples(cfg, args.eval_images)
    samples = [s for s in samples if s.masks.shape[0] > 0]
    if args.eval_max_objects:  # the same first objects for both sides
        samples = [Sample(s.image, s.masks[: args.eval_max_objects], meta=s.meta) for s in samples]
    model = instantiate(cfg.model).build().to(device).eval()
    objects = sum(int(s.masks.shape[0]) for s in samples)

    def evaluator_seconds(image_batch: Any, objects_per_decode: Any) -> tuple[float, Any, tuple]:
        evaluator = instantiate(
            cfg.evaluation,
            protocols=["point1"],
            progress=False,
            image_batch=image_batch,
            objects_per_decode=objects_per_decode,
            # the evaluator keeps its decoder in float32 under any autocast: bf16 is asked of
            # its image encoder by name
            encoder_precision="bf16" if args.eval_precision == "bf16" else "fp32",
        )
        evaluator.evaluate(model, samples[:1], device=device)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        result = evaluator.evaluate(model, samples, device=device)
        sync(device)
        seconds = time.perf_counter() - t0
        return seconds, result, evaluator.settings_for(model, device)

    # the configured default ("auto": resolved for the device), then every object of 4 images in
    # one decoder call (the accelerator setting; on a CPU its working set outgrows the caches)
    eval_batch = args.eval_batch if args.eval_batch == "auto" else int(args.eval_batch)
    samtune_s, result, settings = evaluator_seconds(eval_batch, "auto")
    batched_s, _, _ = evaluator_seconds(4, None)

    predictor = official_predictor(model)
    clicks = [center_points(torch.from_numpy(s.masks)).numpy() for s in samples]
    with torch.inference_mode(), autocast(device, args.eval_precision):
        predictor.set_image(samples[0].image)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        for s, pts in zip(samples, clicks):
            predictor.set_image(s.image)
            for p in pts:
                predictor.predict(
                    point_coords=p[None], point_labels=np.array([1]), multimask_output=True
                )
        sync(device)
    official_s = time.perf_counter() - t0
    row = {
        "model": args.eval_size,
        "image_size": args.eval_image_size,
        "precision": args.eval_precision,
        "samtune_decoder_precision": "fp32",  # evaluation always decodes in float32
        "images": len(samples),
        "objects": objects,
        "evaluated_objects": len(result.protocol_rows("point1")),
        "samtune_image_batch": settings[0],
        "samtune_objects_per_decode": settings[1],
        "samtune_objects_per_s": objects / samtune_s,
        "samtune_all_objects_per_decode_objects_per_s": objects / batched_s,
        "official_objects_per_s": objects / official_s,
    }
    row["speedup"] = row["samtune_objects_per_s"] / row["official_objects_per_s"]
    row["speedup_all_objects_per_decode"] = official_s / batched_s
    print(
        f"  eval: samtune {row['samtune_objects_per_s']:.1f} obj/s, "
        f"official {row['official_objects_per_s']:.1f} obj/s",
        flush=True,
    )
    return row


def tables(row: dict[str, Any]) -> list[str]:
    """The evaluation table."""
    settings = (
        f"image_batch {row['samtune_image_batch']}, "
        f"objects_per_decode {row['samtune_objects_per_decode']}"
    )
    return table(
        [
            "evaluation (point1)",
            "px",
            "images",
            "objects",
            "official loop obj/s",
            "samtune default obj/s (speed-up)",
            "samtune, 4 images and all objects per decode (speed-up)",
        ],
        [
            [
                row["model"],
                str(row["image_size"]),
                str(row["images"]),
                str(row["objects"]),
                f"{row['official_objects_per_s']:.2f}",
                f"{row['samtune_objects_per_s']:.2f} ({row['speedup']:.2f}x; {settings})",
                f"{row['samtune_all_objects_per_decode_objects_per_s']:.2f} "
                f"({row['speedup_all_objects_per_decode']:.2f}x)",
            ]
        ],
    )
