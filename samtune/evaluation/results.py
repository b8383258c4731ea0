"""``EvalResult``: per-object rows and their aggregates; ``write_results`` puts them on disk."""

from __future__ import annotations

import csv
import json
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from samtune.evaluation.gallery import Gallery
from samtune.io_atomic import atomic_write, write_text_atomic

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
    seconds: float = 0.0
    gallery: Gallery = field(default_factory=Gallery)

    def protocol_rows(self, protocol: str) -> list[ObjectResult]:
        """The rows of one protocol."""
        return [r for r in self.rows if r.protocol == protocol]

    def counts(self) -> dict[str, Any]:
        """Images, objects and skips."""
        objects = len({(r.image_id, r.file, r.object) for r in self.rows})
        return {
            "images": self.images,
            "objects": objects,
            "skipped_images": self.skipped_images,
            "skipped_objects": self.skipped_objects,
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


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return _json_safe(obj.item())
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def results_dict(result: EvalResult, summary: dict[str, Any]) -> dict[str, Any]:
    """What ``results.json`` holds: the caller's summary, the counts and every aggregate."""
    return _json_safe(
        {
            "summary": dict(summary),
            "counts": result.counts(),
            "protocols": list(result.protocols),
            "max_clicks": result.max_clicks,
            "noc_thresholds": list(result.noc_thresholds),
            "aggregates": result.aggregates(),
        }
    )


def write_per_object_csv(result: EvalResult, path: Path) -> Path:
    """Write one row per object and protocol to ``path``."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            for row in result.rows:
                writer.writerow(row.csv_row())

    atomic_write(path, write)
    return path


def write_results(
    result: EvalResult,
    out_dir: str | os.PathLike,
    *,
    summary: dict[str, Any],
    volumes: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``results.json``, ``per_object.csv``, ``report.md``, ``report.html`` and the PNGs.

    Args:
        result: from :meth:`samtune.evaluation.Evaluator.evaluate`.
        out_dir: folder to write into (created if needed).
        summary: run facts the caller knows: ``model``, ``image_size``, ``adapter``,
            ``checkpoint``, ``random_init``, ``data``, ``split``, ``seed``, ``samtune_version``.
        volumes: per-volume 3D Dice from
            :func:`samtune.evaluation.volume_report.volume_evaluation`, or None. When given it
            goes into ``results.json`` under ``volumes``, into ``per_volume.csv`` and into a
            report section.

    Returns:
        The written files by name (``results``, ``per_object``, ``report_md``, ``report_html``,
        ``per_volume`` when ``volumes`` is given, and one entry per PNG).
    """
    from samtune.evaluation.report import write_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = results_dict(result, summary)
    if volumes is not None:
        data["volumes"] = _json_safe(volumes)
    results_path = out / "results.json"
    write_text_atomic(results_path, json.dumps(data, indent=2))
    files = {
        "results": results_path,
        "per_object": write_per_object_csv(result, out / "per_object.csv"),
    }
    if volumes is not None:
        from samtune.evaluation.volume_report import write_per_volume_csv

        files["per_volume"] = write_per_volume_csv(data["volumes"], out / "per_volume.csv")
    files.update(
        write_report(
            result,
            out,
            summary=data["summary"],
            aggregates=data["aggregates"],
            volumes=data.get("volumes"),
        )
    )
    return files
