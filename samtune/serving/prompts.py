"""Roboflow's prompts (box by centre and size, points with ``positive``) as predictor arrays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from samtune.inference.prompt_files import PromptError, parse_object
from samtune.serving.errors import ApiError
from samtune.serving.schemas import Prompt


@dataclass(frozen=True)
class PromptBatch:
    """The prompts of one request as the arguments of ``SAM2ImagePredictor.predict``.

    Attributes:
        point_coords: ``N x P x 2`` (x, y) pixels, or None.
        point_labels: ``N x P`` (1 foreground, 0 background), or None.
        box: ``N x 4`` XYXY pixels, or None.
        count: N, the number of predictions the request gets (1 without prompts).
    """

    point_coords: np.ndarray | None
    point_labels: np.ndarray | None
    box: np.ndarray | None
    count: int


def prompt_batch(
    prompts: list[Prompt] | None,
    *,
    height: int,
    width: int,
    max_prompts: int,
    max_points: int,
) -> PromptBatch:
    """Check the prompts against the image and the limits, and stack them for one decoder call.

    SAM 2 decodes the prompts of one call as a batch, so every prompt must have the same kind
    (a box or not) and the same number of points. No prompts at all gives one unprompted mask,
    as Roboflow's server does.

    Raises:
        ApiError: 400 naming the prompt (``prompts[i]``, ``prompts[i].box``) and the problem.
    """
    prompts = list(prompts or [])
    if len(prompts) > max_prompts:
        raise ApiError(
            400, f"{len(prompts)} prompts, more than the limit of {max_prompts}", "prompts"
        )
    if not prompts:
        return PromptBatch(None, None, None, 1)
    parsed = []
    for i, prompt in enumerate(prompts):
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
            obj["box"] = [
                b.x - b.width / 2,
                b.y - b.height / 2,
                b.x + b.width / 2,
                b.y + b.height / 2,
            ]
        try:
            parsed.append(parse_object(obj, height=height, width=width, where=where))
        except PromptError as exc:
            field = f"{where}.box" if "box" in str(exc) and "point" not in str(exc) else where
            raise ApiError(400, str(exc), field) from None
    kind = (parsed[0].box is not None, 0 if parsed[0].points is None else len(parsed[0].points))
    for i, p in enumerate(parsed[1:], start=1):
        this = (p.box is not None, 0 if p.points is None else len(p.points))
        if this != kind:
            raise ApiError(
                400,
                f"prompts[{i}] has {'a' if this[0] else 'no'} box and {this[1]} points, but "
                f"prompts[0] has {'a' if kind[0] else 'no'} box and {kind[1]} points: SAM 2 "
                "decodes the prompts of one request as one batch, so they must all have the same "
                "kind and number of points; send the others in another request",
                f"prompts[{i}]",
            )
    coords = labels = box = None
    if kind[1]:
        coords = np.stack([p.points for p in parsed]).astype(np.float32)
        labels = np.stack([p.labels for p in parsed]).astype(np.int32)
    if kind[0]:
        box = np.stack([p.box for p in parsed]).astype(np.float32)
    return PromptBatch(coords, labels, box, len(parsed))
