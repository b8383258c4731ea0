"""One evaluation on disk: ``results.json``, ``per_object.csv``, ``report.md`` and ``report.html``
with its PNG figures."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from samtune.evaluation.protocols import PROTOCOL_VERSIONS
from samtune.evaluation.report.compare import adapter_label, versions_text
from samtune.evaluation.report.plots import plot_click_curves, plot_overlays
from samtune.evaluation.report.render import (
    Alert,
    Block,
    Heading,
    Image,
    Paragraph,
    Table,
    to_html,
    to_markdown,
)
from samtune.evaluation.report.volumes import volume_blocks, write_per_volume_csv
from samtune.evaluation.results import CSV_COLUMNS, EvalResult, threshold_key
from samtune.io_atomic import atomic_write, write_text_atomic

RANDOM_INIT_LINE = (
    "the model's weights were RANDOM (no SAM 2.1 checkpoint was loaded): these numbers say "
    "nothing about SAM 2.1 or about tuning it"
)
PROTOCOL_TEXT = {
    "point1": "point1: one click at the deepest point of the object, best of 3 masks",
    "box": "box: the object's tight box",
    "clicks": (
        "clicks: point1, then correction clicks at the center of the largest error region, up "
        "to {k} clicks (NoC: clicks to reach the IoU, {k} when never reached; NoF: objects that "
        "never reach it)"
    ),
}
SUMMARY_KEYS = (
    "model", "image_size", "adapter", "checkpoint", "weights", "random_init", "data", "split", "seed",
    "samtune_version",
)  # fmt: skip


def protocol_table(aggregates: dict[str, dict[str, Any]], noc_keys: list[str]) -> Table:
    """One row per protocol: objects, mIoU, mDice, mean predicted IoU, NoC and NoF per threshold."""
    header = ["protocol", "objects", "mIoU", "mDice", "mean pred. IoU"]
    header += [f"NoC@{k}" for k in noc_keys] + [f"NoF@{k}" for k in noc_keys]
    rows = []
    for name, agg in aggregates.items():
        row = [name, agg["n_objects"], agg["miou"], agg["mdice"], agg["mean_pred_iou"]]
        row += [agg.get(f"noc{k}") for k in noc_keys] + [agg.get(f"nof{k}") for k in noc_keys]
        rows.append(row)
    return Table(header, rows)


def console_table(aggregates: dict[str, dict[str, Any]]) -> str:
    """The headline of an evaluation for the console, as a Markdown table: one row per protocol
    with objects, mIoU, mDice and NoC at every threshold that ran (``noc85``, ``noc90``, ...).

    Args:
        aggregates: ``EvalResult.aggregates()``, or any mapping of protocol to a dict with
            ``n_objects``, ``miou``, ``mdice`` and optional ``noc<t>`` keys.
    """
    noc_keys: list[str] = []
    for agg in aggregates.values():
        noc_keys += [k for k in agg if k.startswith("noc") and k not in noc_keys]
    header = ["protocol", "objects", "mIoU", "mDice"] + [f"NoC@{k[3:]}" for k in noc_keys]
    rows = [
        [name, agg.get("n_objects"), agg.get("miou"), agg.get("mdice")]
        + [agg.get(k) for k in noc_keys]
        for name, agg in aggregates.items()
    ]
    return to_markdown([Table(header, rows)]).rstrip()


def _grouped_table(aggregates: dict[str, dict[str, Any]], group: str, first: str) -> Table:
    """mIoU / mDice of every protocol per class or per image."""
    keys: list[str] = []
    for agg in aggregates.values():
        keys += [k for k in agg[group] if k not in keys]
    header = [first, "objects"] + [f"{p} {m}" for p in aggregates for m in ("mIoU", "mDice")]
    if group == "per_image":
        header.insert(1, "file")
    rows = []
    for key in keys:
        entries = [agg[group].get(key) for agg in aggregates.values()]
        known = next(e for e in entries if e is not None)
        row: list[Any] = [key, known["n"]]
        if group == "per_image":
            row.insert(1, Path(known["file"]).name)
        for e in entries:
            row += [None, None] if e is None else [e["miou"], e["mdice"]]
        rows.append(row)
    return Table(header, rows)


def write_report(
    result: EvalResult,
    out: Path,
    *,
    summary: dict[str, Any],
    aggregates: dict[str, dict[str, Any]],
    volumes: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write the figures, ``report.md`` and ``report.html`` into ``out``.

    Args:
        result: the evaluation (its gallery gives the overlays).
        out: the folder.
        summary: run facts (see :func:`samtune.evaluation.report.files.write_results`).
        aggregates: ``result.aggregates()`` as already written to ``results.json``.
        volumes: the per-volume 3D Dice as written to ``results.json``, or None; adds the
            section "Per volume (3D Dice)".

    Returns:
        ``report_md``, ``report_html``, ``plot_clicks`` (if the clicks protocol ran) and
        ``overlays_<protocol>`` paths.
    """
    files: dict[str, Path] = {}
    noc_keys = [threshold_key(t) for t in result.noc_thresholds]
    counts = result.counts()

    title = f"samtune evaluation: {summary.get('model', '?')} / {adapter_label(summary)}"
    blocks: list[Block] = [Heading(title, 1)]
    if summary.get("random_init"):
        blocks.append(Alert(RANDOM_INIT_LINE))
    run = [[k, summary.get(k)] for k in SUMMARY_KEYS if k in summary]
    evaluated = summary.get("evaluated")
    if isinstance(evaluated, dict) and evaluated.get("label"):
        run.insert(0, ["weights evaluated", evaluated["label"]])
    run.append(["protocol version", versions_text(summary.get("protocol_version"))])
    run += [[k, v] for k, v in counts.items()]
    blocks += [Heading("Run"), Table(["key", "value"], run)]
    if counts["skipped_images"] or counts["skipped_objects"]:
        blocks.append(
            Alert(
                f"{counts['skipped_images']} image(s) and {counts['skipped_objects']} object(s) "
                "were skipped (unreadable, or empty masks)"
            )
        )
    if counts.get("dropped_small_objects"):
        blocks.append(
            Alert(
                f"{counts['dropped_small_objects']} object(s) below data.min_object_area="
                f"{counts.get('min_object_area')} px at {summary.get('image_size', '?')} px "
                "were not scored (training drops them the same way)"
            )
        )
    blocks += [
        Heading("Results per protocol"),
        Paragraph(
            "; ".join(
                PROTOCOL_TEXT[p].format(k=result.max_clicks)
                for p in result.protocols
                if p in PROTOCOL_TEXT
            )
            + "."
        ),
        protocol_table(aggregates, noc_keys),
    ]
    clicks = aggregates.get("clicks")
    if clicks and clicks["miou_at_clicks"]:
        files["plot_clicks"] = plot_click_curves(
            {str(summary.get("model", "model")): clicks["miou_at_clicks"]},
            out / "miou_vs_clicks.png",
        )
        blocks += [
            Heading("mIoU vs clicks"),
            Image(files["plot_clicks"].name, "mIoU vs clicks"),
            Table(["clicks", "mIoU"], [[k + 1, v] for k, v in enumerate(clicks["miou_at_clicks"])]),
        ]
    blocks += [Heading("Per class"), _grouped_table(aggregates, "per_class", "class")]
    if volumes is not None:
        blocks += volume_blocks(volumes)
    blocks += [Heading("Overlays")]
    for protocol in result.protocols:
        best, worst = result.gallery.examples(protocol)
        if not best:
            continue
        key = f"overlays_{protocol}"
        files[key] = plot_overlays(best, worst, out / f"{key}.png", title=protocol)
        blocks.append(Image(files[key].name, f"best and worst objects, {protocol}"))
    blocks += [Heading("Per image"), _grouped_table(aggregates, "per_image", "image id")]
    files["report_md"] = out / "report.md"
    write_text_atomic(files["report_md"], to_markdown(blocks))
    files["report_html"] = out / "report.html"
    write_text_atomic(files["report_html"], to_html(blocks, title=title))
    return files


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


def protocol_versions(protocols: tuple[str, ...] | list[str]) -> dict[str, int]:
    """The definition version of each protocol run (see CHANGELOG.md), as ``results.json``'s
    ``protocol_version`` records it."""
    return {p: PROTOCOL_VERSIONS[p] for p in protocols}


def results_dict(result: EvalResult, summary: dict[str, Any]) -> dict[str, Any]:
    """What ``results.json`` holds: the caller's summary, the counts, the protocols with the
    version of their definitions (``protocol_version``) and every aggregate."""
    return _json_safe(
        {
            "summary": dict(summary),
            "counts": result.counts(),
            "protocols": list(result.protocols),
            "protocol_version": protocol_versions(result.protocols),
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
            :func:`samtune.evaluation.volumes.volume_evaluation`, or None. When given it
            goes into ``results.json`` under ``volumes``, into ``per_volume.csv`` and into a
            report section.

    Returns:
        The written files by name (``results``, ``per_object``, ``report_md``, ``report_html``,
        ``per_volume`` when ``volumes`` is given, and one entry per PNG).
    """
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
        files["per_volume"] = write_per_volume_csv(data["volumes"], out / "per_volume.csv")
    files.update(
        write_report(
            result,
            out,
            summary={**data["summary"], "protocol_version": data["protocol_version"]},
            aggregates=data["aggregates"],
            volumes=data.get("volumes"),
        )
    )
    return files
