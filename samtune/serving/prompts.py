"""Roboflow's prompts (box by centre and size, points with ``positive``) as predictor arrays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from samtune.inference.prompt_files import PromptError, parse_object
from samtune.serving.errors import ApiError
from samtune.serving.schemas import Prompt

NOT_A_POINT = -1  # SAM's label of a padding point (ignored by the prompt, but it is a token)


@dataclass(frozen=True)
class PromptBatch:
    """Prompts of one request decoded together, as the arguments of ``SAM2ImagePredictor.predict``.

    Attributes:
        point_coords: ``N x P x 2`` (x, y) pixels, or None.
        point_labels: ``N x P`` (1 foreground, 0 background, -1 padding), or None.
        box: ``N x 4`` XYXY pixels, or None.
        count: N, the number of predictions this batch gives (1 without prompts).
        rows: ``N`` positions of these prompts in the request (answers come back in that order).
    """

    point_coords: np.ndarray | None
    point_labels: np.ndarray | None
    box: np.ndarray | None
    count: int
    rows: tuple[int, ...] = (0,)


def prompt_groups(
    prompts: list[Prompt] | None,
    *,
    height: int,
    width: int,
    max_prompts: int,
    max_points: int,
) -> list[PromptBatch]:
    """Check the prompts against the image and the limits, and stack them for the decoder.

    SAM 2 decodes the prompts of one call as one batch: one tensor of points (and one of boxes)
    for all of them. As Roboflow's server does, prompts with fewer points are padded with "not a
    point" entries (``(0, 0)``, label -1) up to the most points of the request; a padded prompt's
    mask differs slightly from the one it gets alone (the padding is a token the decoder attends
    to). Prompts with a box and prompts without one cannot share a call: they are decoded in two
    groups (Roboflow's server fails on such a request). No prompts at all gives one unprompted
    mask, as Roboflow's server does.

    Returns:
        One batch per group (those with a box first if the first prompt has one), each with the
        request positions of its prompts.

    Raises:
        ApiError: 400 naming the prompt (``prompts[i]``, ``prompts[i].box``) and the problem.
    """
    prompts = list(prompts or [])
    if len(prompts) > max_prompts:
        raise ApiError(
            400, f"{len(prompts)} prompts, more than the limit of {max_prompts}", "prompts"
        )
    if not prompts:
        return [PromptBatch(None, None, None, 1, (0,))]
    parsed = [_parse(prompt, i, height, width, max_points) for i, prompt in enumerate(prompts)]
    groups: dict[bool, list[int]] = {}
    for i, p in enumerate(parsed):
        groups.setdefault(p.box is not None, []).append(i)
    most = max(0 if p.points is None else len(p.points) for p in parsed)
    batches = []
    for boxed, rows in groups.items():
        members = [parsed[i] for i in rows]
        coords = labels = box = None
        if most:
            coords = np.zeros((len(rows), most, 2), np.float32)
            labels = np.full((len(rows), most), NOT_A_POINT, np.int32)
            for j, p in enumerate(members):
                if p.points is not None:
                    coords[j, : len(p.points)] = p.points
                    labels[j, : len(p.points)] = p.labels
        if boxed:
            box = np.stack([p.box for p in members]).astype(np.float32)
        batches.append(PromptBatch(coords, labels, box, len(rows), tuple(rows)))
    return batches


def _parse(prompt: Prompt, i: int, height: int, width: int, max_points: int):
    where = f"prompts[{i}]"
    obj: dict = {}
    if prompt.points:
        if len(prompt.points) > max_points:
            raise ApiError(
                400,
                f"{where} has {len(prompt.points)} points, more than the limit of {max_points}",
                f"{where}.points",
            )
        obj["points"] = [[p.x, p.y] for p in prompt.points]
        obj["labels"] = [int(p.positive) for p in prompt.points]
    if prompt.box is not None:
        b = prompt.box
        if b.width <= 0 or b.height <= 0:
            raise ApiError(
                400,
                f"{where}.box needs a positive width and height, got {b.width:g} x {b.height:g}",
                f"{where}.box",
            )
        obj["box"] = [b.x - b.width / 2, b.y - b.height / 2, b.x + b.width / 2, b.y + b.height / 2]
    try:
        return parse_object(obj, height=height, width=width, where=where)
    except PromptError as exc:
        field = f"{where}.box" if "box" in str(exc) and "point" not in str(exc) else where
        raise ApiError(400, str(exc), field) from None
