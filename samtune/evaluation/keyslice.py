"""``keyslice_box``: one box on one slice per object, propagated both ways through the volume.

What a clinician does with SAM 2 on a CT/MR volume (as MedSAM2 evaluates): for each object (a
connected 3D region of a label value, or a whole label value with ``data.mode=semantic``), its
key slice is the slice along ``data.axis`` where it is largest (the first such slice on a tie);
its tight box there (the ``box`` rule) prompts the official ``SAM2VideoPredictor``, which tracks
it forwards to the last slice and backwards to the first. Objects sharing a key slice are
tracked together. An object's mask on a slice is its own logit > 0; the masks of a class are
OR-ed into one 3D mask and scored against the class's ground truth on every slice:

- 3D Dice per class and volume (as :func:`samtune.evaluation.volumes.volume_dice`);
- NSD at ``nsd_tolerance_mm`` from the voxel spacing
  (:func:`samtune.evaluation.surface.normalized_surface_distance`).

Means as :func:`samtune.evaluation.volumes.summarize_dice` (NaN left out).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from samtune.data.clip import Clip
from samtune.evaluation.surface import normalized_surface_distance
from samtune.evaluation.volumes import summarize_dice
from samtune.inference.video import propagate, video_state
from samtune.prompts.sampling import mask_to_box

KEYSLICE_VERSION = {"keyslice_box": 1}


def key_slices(clip: Clip) -> dict[int, list[int]]:
    """``{key slice: [object indices]}``: each object's slice of largest area."""
    areas = clip.masks.reshape(clip.masks.shape[0], clip.num_frames, -1).sum(axis=2)
    groups: dict[int, list[int]] = {}
    for n in range(areas.shape[0]):
        if areas[n].max() > 0:
            groups.setdefault(int(np.argmax(areas[n])), []).append(n)
    return dict(sorted(groups.items()))


def keyslice_box_masks(predictor: Any, clip: Clip) -> np.ndarray:
    """``N x T x H x W`` bool: each object's propagated mask on every slice."""

    out = np.zeros(clip.masks.shape, dtype=bool)
    state = video_state(predictor, clip.frames)
    for key, objects in key_slices(clip).items():
        predictor.reset_state(state)
        for n in objects:
            box = mask_to_box(torch.from_numpy(clip.masks[n, key])[None])[0].numpy()
            predictor.add_new_points_or_box(state, key, n + 1, box=box.astype(np.float32))
        for reverse in (False, True):
            if reverse and key == 0:
                break
            for t, obj_ids, logits in propagate(
                predictor, state, start_frame_idx=key, reverse=reverse
            ):
                binary = (logits[:, 0] > 0).cpu().numpy()
                for row, obj_id in enumerate(obj_ids):
                    out[int(obj_id) - 1, int(t)] = binary[row]
    return out


def score_volume(
    clip: Clip, predicted: np.ndarray, tolerance_mm: float
) -> tuple[dict[int, float], dict[int, float]]:
    """``({class: 3D Dice}, {class: NSD})`` of one volume (classes of its objects)."""
    spacing = clip.meta.get("spacing") or (1.0, 1.0, 1.0)
    dice: dict[int, float] = {}
    nsd: dict[int, float] = {}
    for class_id in sorted({int(c) for c in clip.class_ids}):
        rows = clip.class_ids == class_id
        gt, pred = clip.masks[rows].any(axis=0), predicted[rows].any(axis=0)
        total = int(gt.sum()) + int(pred.sum())
        dice[class_id] = float("nan") if total == 0 else 2.0 * int((gt & pred).sum()) / total
        nsd[class_id] = normalized_surface_distance(pred, gt, spacing, tolerance_mm)
    return dice, nsd


def keyslice_box_evaluation(
    predictor: Any,
    clips: Any,
    *,
    tolerance_mm: float = 2.0,
    max_volumes: int | None = None,
    class_names: dict[int, str] | None = None,
) -> dict[str, Any]:
    """``keyslice_box`` on every volume of ``clips`` (whole-volume clips).

    ``class_names`` (``{label value: name}``, as the per-slice summary holds them) names the
    classes of the summary; a class without a name is called by its value.

    Returns:
        ``summarize_dice`` of the Dice (``per_volume``, ``volume_mean``, ``class_mean``,
        ``mean``, ``n_volumes``) with ``nsd`` (the same summary of the NSD) and
        ``nsd_tolerance_mm``.
    """

    count = len(clips) if max_volumes is None else min(len(clips), int(max_volumes))
    dice: dict[str, dict[int, float]] = {}
    nsd: dict[str, dict[int, float]] = {}
    classes: set[int] = set()
    with torch.inference_mode():
        for index in range(count):
            clip = clips[index]
            if clip is None:
                continue
            case = str(clip.meta.get("volume") or clip.meta.get("video") or index)
            d, s = score_volume(clip, keyslice_box_masks(predictor, clip), tolerance_mm)
            dice[case], nsd[case] = d, s
            classes |= set(d)
    ids = sorted(classes) or [1]
    names = {int(c): str(n) for c, n in (class_names or {}).items()}
    named = {c: names.get(c, str(c)) for c in ids}
    summary = summarize_dice(dice, named)
    summary["nsd"] = summarize_dice(nsd, named)
    summary["nsd_tolerance_mm"] = float(tolerance_mm)
    return summary
