"""Folder prediction (what ``samtune-predict`` does): one mask per prompted object, or automatic masks.

The prompts file format is described in :mod:`samtune.inference.prompt_files`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from samtune.data.io import read_image
from samtune.inference.auto import predict_automatic
from samtune.inference.mask_files import (
    check_output_folder,
    coco_result,
    staged_output,
    write_mask_png,
    write_results,
)
from samtune.inference.predictor import fit_feature_sizes
from samtune.inference.prompt_files import ObjectPrompt, read_prompts
from samtune.models import ModelSpec
from samtune.models.weights import is_none, load_model

log = logging.getLogger(__name__)


def predict_folder(
    predictor: Any,
    prompts: dict[str, list[ObjectPrompt]],
    *,
    images_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    multimask: bool = False,
) -> list[dict[str, Any]]:
    """One mask per prompted object (the best-scored of three when ``multimask``).

    Writes ``<stem>_<k>.png`` (0/255) per object and ``masks.json`` (COCO results) to ``out_dir``,
    all of them or none (:func:`~samtune.inference.mask_files.staged_output`).

    Returns:
        The COCO results, each with ``mask_file`` added.
    """
    with staged_output(out_dir) as staging:
        return _predict_into(predictor, prompts, Path(images_dir), staging, multimask)


def _predict_into(
    predictor: Any,
    prompts: dict[str, list[ObjectPrompt]],
    images_dir: Path,
    out_dir: Path,
    multimask: bool,
) -> list[dict[str, Any]]:
    results = []
    for image_id, (file_name, objects) in enumerate(prompts.items()):
        predictor.set_image(read_image(images_dir / file_name))
        for k, obj in enumerate(objects):
            masks, scores, _ = predictor.predict(
                point_coords=obj.points,
                point_labels=obj.labels,
                box=obj.box,
                multimask_output=multimask,
            )
            best = int(np.argmax(scores))
            mask = masks[best] > 0.5
            result = coco_result(
                mask, image_id=image_id, file_name=file_name, index=k, score=scores[best]
            )
            result["mask_file"] = write_mask_png(out_dir, file_name, k, mask)
            results.append(result)
        log.info("%s: %d objects", file_name, len(objects))
    write_results(out_dir, results)
    return results


def run_predict(
    *,
    ckpt: str | None,
    images: str | os.PathLike,
    out: str | os.PathLike,
    prompts: str | os.PathLike | None = None,
    mode: str = "prompts",
    multimask: bool = False,
    image_size: int | None = None,
    device: str = "cpu",
    spec: ModelSpec | None = None,
    auto: dict[str, Any] | None = None,
) -> Path:
    """What ``samtune-predict`` does: check the prompts, load the model, predict, write.

    Returns:
        The ``masks.json`` path.
    """
    if mode not in {"prompts", "auto"}:
        raise ValueError(f"mode must be 'prompts' or 'auto', got {mode!r}")
    parsed = None
    if mode == "prompts":
        if is_none(prompts):
            raise ValueError("mode=prompts needs prompts=<file.json> (or use mode=auto)")
        parsed = read_prompts(prompts, images)  # every check happens before any mask is written
    check_output_folder(out)  # before the model is loaded
    model, info = load_model(ckpt, spec, image_size=image_size)
    model = model.to(device)
    log.info(
        "model %s (%s adapter) at %d px from %s",
        info["name"],
        info["adapter"],
        info["image_size"],
        ckpt,
    )
    if mode == "auto":
        predict_automatic(model, images_dir=images, out_dir=out, **(auto or {}))
    else:
        # sam2 is imported where it is used: importing it sets up Hydra's global state, which
        # samtune-predict (a Hydra app that imports this module) must not find initialised
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        predictor = fit_feature_sizes(SAM2ImagePredictor(model))
        predict_folder(predictor, parsed, images_dir=images, out_dir=out, multimask=multimask)
    return Path(out) / "masks.json"
