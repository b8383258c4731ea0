"""Load a tuned model into sam2's own predictors, and predict masks for a folder of images.

``load_predictor`` returns the official ``SAM2ImagePredictor`` (application code keeps calling
``predict(point_coords, point_labels, box, mask_input, multimask_output)``), working at the
model's own ``image_size``; ``load_video_predictor`` returns the official ``SAM2VideoPredictor``.
A model can come from a samtune Lightning checkpoint (``.ckpt``), an exported or official
``{"model": state_dict}`` file (``.pt``), or ``None`` for a :class:`~samtune.models.ModelSpec`.

The prompts file of :func:`predict_folder` (``samtune-predict prompts=prompts.json``) maps an
image file name (inside ``images``) to a list of objects; each object has points, a box, or both::

    {
      "cells_01.png": [
        {"points": [[120, 84], [131, 90]], "labels": [1, 0]},
        {"box": [30, 40, 95, 110]},
        {"box": [200, 10, 250, 60], "points": [[225, 35]], "labels": [1]}
      ]
    }

Points are ``[x, y]`` pixels of the original image (``0 <= x < width``, ``0 <= y < height``);
labels are 1 (foreground) or 0 (background), one per point (all 1 when ``labels`` is left
out); a box is ``[x1, y1, x2, y2]`` with ``0 <= x1 < x2 <= width`` and ``0 <= y1 < y2 <= height``.
Object ``k`` (0-based, in list order) of ``cells_01.png`` is written as ``cells_01_<k>.png``
(0/255); all objects go into ``masks.json`` as COCO results with RLE segmentations.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from samtune.data.io import IMAGE_SUFFIXES, read_image, read_size
from samtune.models import CheckpointError, ModelSpec, get_model_info
from samtune.models.build import POSTPROCESSING_OVERRIDES, sam2_config_path
from samtune.models.weights import is_none, load_model
from samtune.segmenter.sam2 import feature_sizes

log = logging.getLogger(__name__)

VIDEO_PREDICTOR_TARGET = "sam2.sam2_video_predictor.SAM2VideoPredictor"
# What ``sam2.build_sam.build_sam2_video_predictor`` sets on top of the image postprocessing.
VIDEO_POSTPROCESSING_OVERRIDES = {"binarize_mask_from_pts_for_mem_enc": True, "fill_hole_area": 8}


# ---------------------------------------------------------------------------------------------
# loading models and predictors
# ---------------------------------------------------------------------------------------------


def load_sam2_model(
    path: str | os.PathLike | None,
    spec: ModelSpec | None = None,
    *,
    image_size: int | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Build a plain ``SAM2Base`` from whatever ``path`` is; see :func:`samtune.models.weights.load_model`."""
    return load_model(path, spec, image_size=image_size)


def fit_feature_sizes(predictor: Any) -> Any:
    """Give a ``SAM2ImagePredictor`` the feature sizes of its model's ``image_size``.

    The official class hard-codes the sizes for 1024 px; this derives them from the model.
    Returns the same predictor.
    """
    predictor._bb_feat_sizes = feature_sizes(predictor.model)
    return predictor


def load_predictor(
    path: str | os.PathLike | None,
    *,
    image_size: int | None = None,
    device: str | torch.device = "cpu",
    spec: ModelSpec | None = None,
    **predictor_kwargs: Any,
):
    """The official ``SAM2ImagePredictor`` on a tuned (or zero-shot) model.

    Args:
        path: see :func:`load_sam2_model`.
        image_size: build at this resolution instead of the recorded one.
        device: where the model runs.
        spec: see :func:`load_sam2_model`.
        **predictor_kwargs: passed to ``SAM2ImagePredictor`` (``mask_threshold``,
            ``max_hole_area``, ``max_sprinkle_area``).

    Returns:
        A ``sam2.sam2_image_predictor.SAM2ImagePredictor`` that works at the model's
        ``image_size`` (its feature sizes are derived from the model).
    """
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    model, info = load_sam2_model(path, spec, image_size=image_size)
    log.info(
        "loaded %s (%s adapter) at %d px from %s",
        info["name"],
        info["adapter"],
        info["image_size"],
        path,
    )
    return fit_feature_sizes(SAM2ImagePredictor(model.to(device), **predictor_kwargs))


def build_video_model(name: str, *, image_size: int) -> nn.Module:
    """A randomly initialised ``SAM2VideoPredictor`` for ``name``, configured like
    ``sam2.build_sam.build_sam2_video_predictor`` with ``apply_postprocessing=True``, built from
    sam2's YAML without Hydra's global state."""
    from hydra.utils import instantiate

    cfg = OmegaConf.load(sam2_config_path(get_model_info(name).sam2_config))
    cfg.model._target_ = VIDEO_PREDICTOR_TARGET
    cfg.model.image_size = int(image_size)
    extra = cfg.model.get("sam_mask_decoder_extra_args") or {}
    cfg.model.sam_mask_decoder_extra_args = {**extra, **POSTPROCESSING_OVERRIDES}
    for key, value in VIDEO_POSTPROCESSING_OVERRIDES.items():
        cfg.model[key] = value
    OmegaConf.resolve(cfg)
    return instantiate(cfg.model, _recursive_=True)


def load_video_predictor(
    path: str | os.PathLike | None,
    *,
    image_size: int | None = None,
    device: str | torch.device = "cpu",
    spec: ModelSpec | None = None,
):
    """The official ``SAM2VideoPredictor`` with the weights of ``path`` (see :func:`load_sam2_model`).

    Returns:
        A ``sam2.sam2_video_predictor.SAM2VideoPredictor`` in eval mode on ``device``.
    """
    model, info = load_sam2_model(path, spec, image_size=image_size)
    video = build_video_model(info["name"], image_size=info["image_size"])
    missing, unexpected = video.load_state_dict(model.state_dict(), strict=False, assign=True)
    if missing or unexpected:
        raise CheckpointError(
            f"the weights of {path} do not fit SAM2VideoPredictor: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    return video.to(device).eval()


# ---------------------------------------------------------------------------------------------
# prompts files
# ---------------------------------------------------------------------------------------------


class PromptError(ValueError):
    """A prompts file does not fit its images; the message names the image and the problem."""


@dataclass(frozen=True)
class ObjectPrompt:
    """The prompt of one object, in original-image pixels.

    Attributes:
        points: ``P x 2`` float (x, y), or None.
        labels: ``P`` int (1 foreground, 0 background), or None.
        box: ``4`` float XYXY, or None.
    """

    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None


def _as_points(value: Any, where: str) -> np.ndarray:
    try:
        points = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        points = None
    if points is None or points.ndim != 2 or points.shape[1] != 2 or points.shape[0] == 0:
        raise PromptError(
            f"{where}: 'points' must be a non-empty list of [x, y] pairs, got {value!r}"
        )
    return points


def parse_object(obj: Any, *, height: int, width: int, where: str) -> ObjectPrompt:
    """Check one object of a prompts file against its image size and convert it.

    Raises:
        PromptError: naming ``where`` (image and object) and the problem.
    """
    if not isinstance(obj, dict):
        raise PromptError(
            f"{where}: an object must be a dict with 'points'/'labels' and/or 'box', got {obj!r}"
        )
    unknown = set(obj) - {"points", "labels", "box"}
    if unknown:
        raise PromptError(
            f"{where}: unknown keys {sorted(unknown)}; expected 'points', 'labels', 'box'"
        )
    if "points" not in obj and "box" not in obj:
        raise PromptError(f"{where}: the object has neither 'points' nor 'box'")
    points = labels = box = None
    if "points" in obj:
        points = _as_points(obj["points"], where)
        raw = obj.get("labels", [1] * len(points))
        labels = np.asarray(raw)
        if labels.ndim != 1 or len(labels) != len(points):
            raise PromptError(
                f"{where}: {len(points)} points but labels {raw!r} (need one label per point)"
            )
        if not np.isin(labels, (0, 1)).all():
            raise PromptError(
                f"{where}: labels must be 1 (foreground) or 0 (background), got {raw!r}"
            )
        labels = labels.astype(np.int64)
        outside = (
            (points[:, 0] < 0)
            | (points[:, 0] >= width)
            | (points[:, 1] < 0)
            | (points[:, 1] >= height)
        )
        if outside.any():
            x, y = points[np.argmax(outside)]
            raise PromptError(
                f"{where}: point ({x:g}, {y:g}) is outside the {width}x{height} (WxH) image"
            )
    elif "labels" in obj:
        raise PromptError(f"{where}: 'labels' given without 'points'")
    if "box" in obj:
        try:
            box = np.asarray(obj["box"], dtype=np.float64)
        except (TypeError, ValueError):
            box = np.zeros(0)
        if box.shape != (4,):
            raise PromptError(f"{where}: 'box' must be [x1, y1, x2, y2], got {obj['box']!r}")
        x1, y1, x2, y2 = box
        if x2 <= x1 or y2 <= y1:
            raise PromptError(f"{where}: box {obj['box']!r} needs x2 > x1 and y2 > y1")
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            raise PromptError(
                f"{where}: box {obj['box']!r} is outside the {width}x{height} (WxH) image"
            )
    return ObjectPrompt(points=points, labels=labels, box=box)


def read_prompts(
    prompts_file: str | os.PathLike, images_dir: str | os.PathLike
) -> dict[str, list[ObjectPrompt]]:
    """Read and check a whole prompts file before anything is predicted.

    Returns:
        Image file name -> its objects, in file order.

    Raises:
        PromptError: for an unreadable file, a listed image that is missing, or a bad object,
            naming the image and the problem.
    """
    prompts_file, images_dir = Path(prompts_file), Path(images_dir)
    try:
        raw = json.loads(prompts_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PromptError(f"cannot read prompts file {prompts_file}: {exc}") from exc
    if not isinstance(raw, dict) or not raw:
        raise PromptError(
            f"{prompts_file}: expected a non-empty JSON object mapping image file names to lists of objects"
        )
    stems: dict[str, str] = {}
    parsed: dict[str, list[ObjectPrompt]] = {}
    for image_name, objects in raw.items():
        image_path = images_dir / image_name
        if not image_path.is_file():
            raise PromptError(
                f"{prompts_file}: image {image_name!r} is listed but {image_path} does not exist"
            )
        stem = Path(image_name).stem
        if stem in stems:
            raise PromptError(
                f"{prompts_file}: images {stems[stem]!r} and {image_name!r} would write the same mask files"
            )
        stems[stem] = image_name
        if not isinstance(objects, list) or not objects:
            raise PromptError(
                f"{prompts_file}: image {image_name!r} needs a non-empty list of objects, got {objects!r}"
            )
        height, width = read_size(image_path)
        parsed[image_name] = [
            parse_object(
                obj,
                height=height,
                width=width,
                where=f"{prompts_file}: image {image_name!r}, object {k}",
            )
            for k, obj in enumerate(objects)
        ]
    return parsed


# ---------------------------------------------------------------------------------------------
# predicting a folder
# ---------------------------------------------------------------------------------------------


def coco_result(
    mask: np.ndarray, *, image_id: int, file_name: str, index: int, score: float
) -> dict[str, Any]:
    """One COCO-style result with an RLE segmentation (pycocotools) for a ``H x W`` bool mask."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    area, bbox = float(mask_utils.area(rle)), mask_utils.toBbox(rle).tolist()
    rle["counts"] = rle["counts"].decode("ascii")
    return {
        "image_id": image_id,
        "file_name": file_name,
        "object": index,
        "category_id": 1,
        "segmentation": rle,
        "score": float(score),
        "area": area,
        "bbox": bbox,
    }


def _write_mask(out_dir: Path, file_name: str, index: int, mask: np.ndarray) -> str:
    from PIL import Image

    name = f"{Path(file_name).stem}_{index}.png"
    Image.fromarray(mask.astype(np.uint8) * 255).save(out_dir / name)
    return name


def _write_results(out_dir: Path, results: list[dict[str, Any]]) -> Path:
    from samtune.io_atomic import atomic_write

    path = out_dir / "masks.json"
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(results)))
    return path


def predict_folder(
    predictor: Any,
    prompts: dict[str, list[ObjectPrompt]],
    *,
    images_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    multimask: bool = False,
) -> list[dict[str, Any]]:
    """One mask per prompted object (the best-scored of three when ``multimask``).

    Writes ``<stem>_<k>.png`` (0/255) per object and ``masks.json`` (COCO results) to ``out_dir``.

    Returns:
        The COCO results, each with ``mask_file`` added.
    """
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
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
            result["mask_file"] = _write_mask(out_dir, file_name, k, mask)
            results.append(result)
        log.info("%s: %d objects", file_name, len(objects))
    _write_results(out_dir, results)
    return results


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
        out_dir: receives ``<stem>_<k>.png`` per mask and ``masks.json`` (score = predicted IoU).
        **generator_kwargs: passed to ``SAM2AutomaticMaskGenerator`` (``points_per_side``, ...).
    """
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    names = list_images(images_dir)
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    generator = SAM2AutomaticMaskGenerator(model, output_mode="binary_mask", **generator_kwargs)
    fit_feature_sizes(generator.predictor)
    results = []
    for image_id, file_name in enumerate(names):
        found = generator.generate(read_image(images_dir / file_name))
        found.sort(key=lambda ann: -ann["predicted_iou"])
        for k, ann in enumerate(found):
            mask = np.asarray(ann["segmentation"], dtype=bool)
            result = coco_result(
                mask, image_id=image_id, file_name=file_name, index=k, score=ann["predicted_iou"]
            )
            result["mask_file"] = _write_mask(out_dir, file_name, k, mask)
            results.append(result)
        log.info("%s: %d masks", file_name, len(found))
    _write_results(out_dir, results)
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
    model, info = load_sam2_model(ckpt, spec, image_size=image_size)
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
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        predictor = fit_feature_sizes(SAM2ImagePredictor(model))
        predict_folder(predictor, parsed, images_dir=images, out_dir=out, multimask=multimask)
    return Path(out) / "masks.json"
