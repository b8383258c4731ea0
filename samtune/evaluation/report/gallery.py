"""The best and worst objects of each protocol, kept as small crops for the report's overlays."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from samtune.evaluation.report.overlay import crop_around


@dataclass
class Example:
    """One object as drawn in an overlay: a crop of the image around the object.

    Attributes:
        protocol: the evaluation protocol.
        iou: the object's IoU (after the last click for ``clicks``).
        image_id: the image's id.
        file: the image file.
        object_index: the object's index in the sample.
        class_name: the object's class.
        image: ``h x w x 3`` uint8 crop.
        gt: ``h x w`` bool ground truth in the crop.
        pred: ``h x w`` bool prediction in the crop.
        points: ``P x 2`` click ``(x, y)`` in crop pixels.
        labels: ``P`` click labels (1 positive, 0 negative).
        box: XYXY box prompt in crop pixels, or None.
    """

    protocol: str
    iou: float
    image_id: object
    file: str
    object_index: int
    class_name: str
    image: np.ndarray
    gt: np.ndarray
    pred: np.ndarray
    points: np.ndarray
    labels: np.ndarray
    box: np.ndarray | None = None


def make_example(
    *,
    protocol: str,
    iou: float,
    image: np.ndarray,
    gt: np.ndarray,
    pred: np.ndarray,
    points: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    box: np.ndarray | None = None,
    image_id: object = None,
    file: str = "",
    object_index: int = 0,
    class_name: str = "",
    context: float = 0.75,
) -> Example:
    """Crop ``image``, ``gt`` and ``pred`` around the object and its prompts.

    The crop (:func:`samtune.evaluation.report.overlay.crop_around`) follows the ground truth and the prompts,
    not the prediction, so a small object stays visible even when the prediction covers the
    whole image.

    Args:
        protocol: the evaluation protocol.
        iou: the object's IoU.
        image: full ``H x W x 3`` image.
        gt: full ``H x W`` bool ground truth.
        pred: full ``H x W`` bool prediction.
        points: ``P x 2`` clicks ``(x, y)`` in image pixels, or None.
        labels: ``P`` click labels, or None.
        box: XYXY box prompt in image pixels, or None.
        image_id: the image's id.
        file: the image file.
        object_index: the object's index in the sample.
        class_name: the object's class.
        context: margin around the object, as a fraction of its larger side.
    """
    pts = np.zeros((0, 2), np.float32) if points is None else np.asarray(points, np.float32)
    lbl = np.zeros((0,), np.int32) if labels is None else np.asarray(labels, np.int32)
    r0, r1, c0, c1 = crop_around(gt, points=pts, box=box, context=context)
    offset = np.array([c0, r0], np.float32)
    return Example(
        protocol=protocol,
        iou=float(iou),
        image_id=image_id,
        file=file,
        object_index=int(object_index),
        class_name=class_name,
        image=image[r0:r1, c0:c1].copy(),
        gt=gt[r0:r1, c0:c1].copy(),
        pred=pred[r0:r1, c0:c1].copy(),
        points=pts - offset,
        labels=lbl,
        box=None if box is None else np.asarray(box, np.float32) - np.tile(offset, 2),
    )


@dataclass
class Gallery:
    """Keeps the ``k`` best and ``k`` worst objects (by IoU) of each protocol.

    Ties keep the object seen first, so the choice is deterministic.
    """

    k: int = 4
    best: dict[str, list[tuple[float, int, Example]]] = field(default_factory=dict)
    worst: dict[str, list[tuple[float, int, Example]]] = field(default_factory=dict)
    _seen: int = 0

    def offer(self, protocol: str, iou: float, build: Callable[[], Example]) -> None:
        """Consider one object; ``build`` makes its :class:`Example` only if it is kept."""
        if self.k <= 0:
            return
        self._seen += 1
        order = self._seen
        best = self.best.setdefault(protocol, [])
        worst = self.worst.setdefault(protocol, [])
        enters_best = len(best) < self.k or iou > best[-1][0]
        enters_worst = len(worst) < self.k or iou < worst[-1][0]
        if not (enters_best or enters_worst):
            return
        example = build()
        if enters_best:
            best.append((iou, order, example))
            best.sort(key=lambda item: (-item[0], item[1]))
            del best[self.k :]
        if enters_worst:
            worst.append((iou, order, example))
            worst.sort(key=lambda item: (item[0], item[1]))
            del worst[self.k :]

    def examples(self, protocol: str) -> tuple[list[Example], list[Example]]:
        """The best (highest IoU first) and worst (lowest first) examples of ``protocol``."""
        best = [e for _, _, e in self.best.get(protocol, [])]
        worst = [e for _, _, e in self.worst.get(protocol, [])]
        return best, worst
