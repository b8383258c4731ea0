"""The per-volume section of an evaluation: ``per_volume.csv`` and the report's 3D Dice tables."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from samtune.evaluation.report.render import Block, Heading, Paragraph, Table
from samtune.io_atomic import write_text_atomic

PER_VOLUME_COLUMNS = (
    "protocol", "volume", "class_id", "class_name", "dice", "gt_voxels", "pred_voxels",
)  # fmt: skip


def write_per_volume_csv(volumes: dict[str, Any], path: str | Path) -> Path:
    """Write ``per_volume.csv``: one row per protocol, volume and class.

    Columns: ``protocol, volume, class_id, class_name, dice, gt_voxels, pred_voxels``; an
    undefined Dice (class in neither volume) is an empty cell.
    """
    path = Path(path)
    with io.StringIO(newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=PER_VOLUME_COLUMNS)
        writer.writeheader()
        for protocol, summary in volumes["protocols"].items():
            for case, per_class in summary["per_volume"].items():
                for class_id, dice in per_class.items():
                    counts = summary["voxels"].get(case, {}).get(class_id, {})
                    writer.writerow(
                        {
                            "protocol": protocol,
                            "volume": case,
                            "class_id": class_id,
                            "class_name": volumes["classes"].get(class_id, class_id),
                            "dice": "" if _missing(dice) else f"{float(dice):.6f}",
                            "gt_voxels": counts.get("gt", ""),
                            "pred_voxels": counts.get("pred", ""),
                        }
                    )
        write_text_atomic(path, handle.getvalue())
    return path


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def volume_blocks(volumes: dict[str, Any]) -> list[Block]:
    """The report section: mean 3D Dice per protocol and class, then one row per volume."""
    classes = volumes["classes"]
    protocols = volumes["protocols"]
    blocks: list[Block] = [
        Heading("Per volume (3D Dice)"),
        Paragraph(
            f"Each protocol's final masks are stacked back along axis {volumes['axis']} and each "
            "class is scored with Dice over the whole ground-truth volume: slices that got no "
            "prompt count as predicting nothing, so objects missed there are false negatives. "
            "A class in neither prediction nor ground truth of a volume is left out (–). "
            "Mean: over volumes per class, then over classes."
        ),
    ]
    header = ["protocol", "volumes", "mean Dice"] + [f"Dice {name}" for name in classes.values()]
    rows = [
        [p, s["n_volumes"], s["mean"]] + [s["class_mean"].get(c) for c in classes]
        for p, s in protocols.items()
    ]
    blocks.append(Table(header, rows))
    header = ["volume"]
    for p in protocols:
        header += [f"{p} mean"] + [f"{p} {name}" for name in classes.values()]
    rows = []
    for case in volumes["cases"]:
        row: list[Any] = [case]
        for s in protocols.values():
            per_class = s["per_volume"].get(case, {})
            row += [s["volume_mean"].get(case)] + [per_class.get(c) for c in classes]
        rows.append(row)
    blocks.append(Table(header, rows))
    if volumes["excluded"]:
        blocks.append(
            Paragraph(
                "Not scored: "
                + "; ".join(f"{case} ({why})" for case, why in volumes["excluded"].items())
            )
        )
    return blocks
