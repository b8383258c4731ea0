"""Automatic masks: everything sam2's ``SAM2AutomaticMaskGenerator`` finds in each image of a folder."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from samtune.data.io import IMAGE_SUFFIXES, read_image
from samtune.inference.mask_files import coco_result, staged_output, write_mask_png, write_results
from samtune.inference.predictor import fit_feature_sizes

log = logging.getLogger(__name__)


def list_images(images_dir: str | os.PathLike) -> list[str]:
    """Image file names in ``images_dir`` (by suffix), sorted."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"images folder {images_dir} does not exist")
    names = sorted(p.name for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not names:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {images_dir}")
    return names


def predict_automatic(
    model: nn.Module,
    *,
    images_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    **generator_kwargs: Any,
) -> list[dict[str, Any]]:
    """Masks for everything in each image, with sam2's ``SAM2AutomaticMaskGenerator``.

    Args:
        model: the (tuned) ``SAM2Base``.
        images_dir: folder of images; every image in it is processed.
        out_dir: receives ``<stem>_<k>.png`` per mask and ``masks.json`` (score = predicted IoU),
            all of them or none.
        **generator_kwargs: passed to ``SAM2AutomaticMaskGenerator`` (``points_per_side``, ...).
    """
    # sam2 is imported where it is used: importing it sets up Hydra's global state, which a
    # samtune Hydra app (the CLIs import this module) must not find already initialised
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    names = list_images(images_dir)
    generator = SAM2AutomaticMaskGenerator(model, output_mode="binary_mask", **generator_kwargs)
    fit_feature_sizes(generator.predictor)
    with staged_output(out_dir) as staging:
        return _generate_into(generator, names, Path(images_dir), staging)


def _generate_into(generator: Any, names: list[str], images_dir: Path, out_dir: Path) -> list:
    results = []
    for image_id, file_name in enumerate(names):
        found = generator.generate(read_image(images_dir / file_name))
        found.sort(key=lambda ann: -ann["predicted_iou"])
        for k, ann in enumerate(found):
            mask = np.asarray(ann["segmentation"], dtype=bool)
            result = coco_result(
                mask, image_id=image_id, file_name=file_name, index=k, score=ann["predicted_iou"]
            )
            result["mask_file"] = write_mask_png(out_dir, file_name, k, mask)
            results.append(result)
        log.info("%s: %d masks", file_name, len(found))
    write_results(out_dir, results)
    return results
