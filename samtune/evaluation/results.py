"""``EvalResult``: per-object rows and their aggregates (data only; ``report.files`` writes them)."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from samtune.evaluation.report.gallery import Gallery

CSV_COLUMNS = (
    "image_id", "file", "object", "class_id", "class_name", "protocol", "area",
    "iou", "dice", "pred_iou", "clicks_to", "iou_per_click",
)  # fmt: skip


def threshold_key(threshold: float) -> str:
    """``0.85 -> "85"``, ``0.9 -> "90"``: how a NoC threshold is named in keys and columns."""
    return f"{threshold * 100:g}"


@dataclass
class ObjectResult:
    """The outcome of one protocol on one object.

    Attributes:
        image_id: the image's id (``Sample.meta["image_id"]``).
        file: the image file.
        object: the object's index in the sample's masks.
        class_id: the object's class id.
        class_name: its name (the id as text when the dataset names no classes).
        protocol: ``point1``, ``box`` or ``clicks``.
        area: ground-truth pixels at the original resolution.
        iou: IoU of the final prediction (after the last click for ``clicks``).
        dice: Dice of the final prediction.
        pred_iou: the model's own IoU prediction for its final mask.
        clicks_to: for ``clicks``, the clicks needed per NoC threshold key (``{"85": 3}``).
        iou_per_click: for ``clicks``, the IoU after click 1..K.
        mask: the final predicted ``H x W`` bool mask, when the evaluator keeps masks.
    """

    image_id: Any
    file: str
    object: int
    class_id: int
    class_name: str
    protocol: str
    area: int
    iou: float
    dice: float
    pred_iou: float
    clicks_to: dict[str, int] | None = None
    iou_per_click: list[float] | None = None
    mask: np.ndarray | None = field(default=None, repr=False)

    def csv_row(self) -> dict[str, Any]:
        """The row as written to ``per_object.csv`` (lists joined with ``;``)."""
        row = {k: getattr(self, k) for k in CSV_COLUMNS}
        if self.clicks_to is not None:
            row["clicks_to"] = ";".join(f"{k}:{v}" for k, v in self.clicks_to.items())
        if self.iou_per_click is not None:
            row["iou_per_click"] = ";".join(f"{v:.6f}" for v in self.iou_per_click)
        return row


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


@dataclass
class EvalResult:
    """Everything an evaluation produced.

    Attributes:
        protocols: the protocols run, in order.
        max_clicks: K of the ``clicks`` protocol.
        noc_thresholds: IoU targets of NoC.
        rows: one :class:`ObjectResult` per object and protocol.
        images: images evaluated.
        skipped_images: samples the dataset could not give (None) or without any object.
        skipped_objects: objects with an empty ground-truth mask (nothing to prompt).
        dropped_small: objects left out for being below ``min_object_area`` pixels at the
            model's input size (as training drops them).
        min_object_area: the ``data.min_object_area`` applied, or None.
        ignored_pixels: pixels of the evaluated images marked "not labelled" by the dataset
            (scored in neither prediction nor ground truth).
        images_with_ignore: evaluated images holding any such pixel.
        scored_pixels: pixels of the evaluated images, ignored ones included.
        seconds: wall time of the evaluation.
        gallery: best and worst objects per protocol, for overlays.
    """

    protocols: tuple[str, ...]
    max_clicks: int
    noc_thresholds: tuple[float, ...]
    rows: list[ObjectResult] = field(default_factory=list)
    images: int = 0
    skipped_images: int = 0
    skipped_objects: int = 0
    dropped_small: int = 0
    min_object_area: int | None = None
    ignored_pixels: int = 0
    images_with_ignore: int = 0
    scored_pixels: int = 0
    seconds: float = 0.0
    gallery: Gallery = field(default_factory=Gallery)

    def protocol_rows(self, protocol: str) -> list[ObjectResult]:
        """The rows of one protocol."""
        return [r for r in self.rows if r.protocol == protocol]

    def counts(self) -> dict[str, Any]:
        """Images, objects, skips, objects dropped below ``min_object_area`` and the ignored
        (not labelled) pixels of the evaluated images."""
        objects = len({(r.image_id, r.file, r.object) for r in self.rows})
        return {
            "images": self.images,
            "objects": objects,
            "skipped_images": self.skipped_images,
            "skipped_objects": self.skipped_objects,
            "dropped_small_objects": self.dropped_small,
            "min_object_area": self.min_object_area,
            "ignored_pixels": self.ignored_pixels,
            "images_with_ignore": self.images_with_ignore,
            "ignored_fraction": (
                round(self.ignored_pixels / self.scored_pixels, 6) if self.scored_pixels else 0.0
            ),
            "seconds": round(self.seconds, 3),
        }

    def aggregate(self, protocol: str) -> dict[str, Any]:
        """Aggregates of one protocol.

        Returns:
            ``n_objects``, ``miou``, ``mdice``, ``mean_pred_iou``, ``per_class`` and
            ``per_image`` (each ``{n, miou, mdice}``); for ``clicks`` also ``max_clicks``,
            ``miou_at_clicks`` (mean IoU after click 1..K), and per threshold key ``t``
            ``noc{t}`` (mean clicks to reach it) and ``nof{t}`` (objects that never do).
        """
        rows = self.protocol_rows(protocol)
        out: dict[str, Any] = {
            "n_objects": len(rows),
            "miou": _mean([r.iou for r in rows]),
            "mdice": _mean([r.dice for r in rows]),
            "mean_pred_iou": _mean([r.pred_iou for r in rows]),
        }
        for name, key in (("per_class", "class_name"), ("per_image", "image_id")):
            groups: dict[str, list[ObjectResult]] = defaultdict(list)
            for r in rows:
                groups[str(getattr(r, key))].append(r)
            out[name] = {
                g: {
                    "n": len(rs),
                    "miou": _mean([r.iou for r in rs]),
                    "mdice": _mean([r.dice for r in rs]),
                    **({"file": rs[0].file} if key == "image_id" else {}),
                }
                for g, rs in groups.items()
            }
        if protocol == "clicks":
            out["max_clicks"] = self.max_clicks
            curves = [r.iou_per_click for r in rows if r.iou_per_click is not None]
            out["miou_at_clicks"] = (
                [float(v) for v in np.mean(np.asarray(curves), axis=0)] if curves else []
            )
            for t in self.noc_thresholds:
                key = threshold_key(t)
                clicks = [r.clicks_to[key] for r in rows if r.clicks_to is not None]
                out[f"noc{key}"] = _mean(clicks)
                out[f"nof{key}"] = int(
                    sum(1 for r in rows if r.iou_per_click and max(r.iou_per_click) < t)
                )
        return out

    def aggregates(self) -> dict[str, dict[str, Any]]:
        """:meth:`aggregate` for every protocol run."""
        return {p: self.aggregate(p) for p in self.protocols}


WEIGHT_KINDS = ("base", "checkpoint", "end_of_training", "export", "file")


@dataclass(frozen=True)
class EvaluatedWeights:
    """Which weights an evaluation scored, as ``results.json`` records them
    (``summary["evaluated"]``) and the reports and ``samtune-report`` label them.

    Kinds:
        ``base``: untouched base weights, the official checkpoint ``path`` or random
            initialisation (``path`` None): the only kind called zero-shot.
        ``checkpoint``: a samtune training checkpoint at ``path``, saved at ``global_step``.
        ``end_of_training``: the weights a training run ended with, at ``global_step``; ``path``
            is the ``last.ckpt`` that holds them, or None when the run wrote no checkpoint.
        ``export``: a file written by ``samtune-export`` (its sidecar names the adapter).
        ``file``: a weights file samtune has no record of (neither official nor exported).

    Attributes:
        kind: one of :data:`WEIGHT_KINDS`.
        path: the file the weights came from, or None.
        global_step: optimizer steps behind the weights, when known.
        random_init: the base weights were random.
    """

    kind: str
    path: str | None = None
    global_step: int | None = None
    random_init: bool = False

    def __post_init__(self) -> None:
        if self.kind not in WEIGHT_KINDS:
            raise ValueError(f"weights kind {self.kind!r}: expected one of {WEIGHT_KINDS}")

    @property
    def tuned(self) -> bool | None:
        """False for untouched base weights (a checkpoint at step 0 included), True for trained
        ones, None when nothing says (a file samtune has no record of)."""
        if self.kind == "base":
            return False
        if self.kind in ("checkpoint", "end_of_training") and self.global_step is not None:
            return self.global_step > 0
        return None if self.kind == "file" else True

    def label(self) -> str:
        """One line for summaries and reports, e.g. ``weights at the end of training (step 24,
        saved as .../last.ckpt)`` or ``zero-shot: random-init base weights``."""
        step = "" if self.global_step is None else f"step {self.global_step}"
        if self.kind == "base":
            source = "random-init base weights" if self.random_init else f"base weights {self.path}"
            return f"zero-shot: {source}"
        if self.kind == "end_of_training":
            where = f"saved as {self.path}" if self.path else "no checkpoint file"
            return f"weights at the end of training ({', '.join(p for p in (step, where) if p)})"
        if self.kind == "checkpoint":
            return f"checkpoint {self.path}" + (f" ({step})" if step else "")
        if self.kind == "export":
            return f"exported weights {self.path}"
        return f"weights file {self.path} (origin not recorded)"

    def as_dict(self) -> dict[str, Any]:
        """The ``summary["evaluated"]`` entry of ``results.json``."""
        return {
            "kind": self.kind,
            "path": self.path,
            "global_step": self.global_step,
            "random_init": self.random_init,
            "tuned": self.tuned,
            "label": self.label(),
        }
