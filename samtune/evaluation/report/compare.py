"""Tables across evaluations: model size x adapter, per protocol mIoU, mDice and NoC (images), J,
F and J&F (clips, with J&F per round of clicks and J by distance from the prompt frame)."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from samtune.evaluation.report.clips import clip_columns, clip_row_values, offset_tables
from samtune.evaluation.report.plots import plot_click_curves
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
from samtune.io_atomic import atomic_write, write_text_atomic
from samtune.models.registry import MODELS

log = logging.getLogger(__name__)

ZERO_SHOT = "zero-shot"
UNKNOWN = "unknown"
UNVERSIONED = "unversioned"
ADAPTER_ORDER = (ZERO_SHOT, "frozen", "lora", "full")
METRICS = (("miou", "mIoU"), ("mdice", "mDice"))
OFFICIAL_NAMES = {"", "none", "null", "official", "auto"}


def weights_tuned(summary: dict[str, Any]) -> bool | None:
    """Whether an evaluation scored tuned weights: False for untouched base weights (official or
    random-init, nothing trained), True for trained ones, None when nothing says.

    The record is ``summary["evaluated"]["tuned"]``. A ``results.json`` written before it existed
    is judged by its checkpoint: none, official or named like an official SAM 2.1 file
    (``sam2.1_hiera_tiny.pt``) is untouched, a ``.ckpt`` or a file with an adapter is tuned; the
    end of training's evaluation of in-memory weights (no checkpoint, a ``base_checkpoint`` and an
    adapter recorded) is tuned too.
    """
    evaluated = summary.get("evaluated")
    if isinstance(evaluated, dict) and "tuned" in evaluated:
        tuned = evaluated["tuned"]
        return None if tuned is None else bool(tuned)
    ckpt = summary.get("checkpoint")
    adapter = summary.get("adapter") not in (None, "", "none")
    if ckpt is None or str(ckpt).strip().lower() in OFFICIAL_NAMES:
        return adapter and "base_checkpoint" in summary
    if Path(str(ckpt)).name in {info.checkpoint_file for info in MODELS.values()}:
        return False
    return True if adapter or str(ckpt).endswith(".ckpt") else None


def adapter_label(summary: dict[str, Any]) -> str:
    """``zero-shot`` for untouched base weights (see :func:`weights_tuned`), the adapter for tuned
    ones (``tuned`` if it is not recorded), ``unknown`` for a file of unknown origin."""
    tuned = weights_tuned(summary)
    if tuned is False:
        return ZERO_SHOT
    if tuned is None:
        return UNKNOWN
    adapter = summary.get("adapter")
    return str(adapter) if adapter not in (None, "", "none") else "tuned"


def weights_label(summary: dict[str, Any]) -> str:
    """The weights an evaluation scored, in words (``summary["evaluated"]["label"]``, or the
    recorded checkpoint of an older ``results.json``)."""
    evaluated = summary.get("evaluated")
    if isinstance(evaluated, dict) and evaluated.get("label"):
        return str(evaluated["label"])
    ckpt = summary.get("checkpoint")
    if weights_tuned(summary) and ckpt is None:
        return "weights at the end of training (step not recorded)"
    return str(ckpt) if ckpt is not None else f"{ZERO_SHOT} (no checkpoint recorded)"


def version_of(versions: dict[str, Any] | None, protocol: str) -> str:
    """``v<n>`` of ``protocol`` in a ``protocol_version`` record, ``unversioned`` when the file
    predates versions (or does not name the protocol)."""
    if not isinstance(versions, dict) or versions.get(protocol) is None:
        return UNVERSIONED
    return f"v{versions[protocol]}"


def versions_text(versions: dict[str, Any] | None) -> str:
    """``point1 v1, box v1`` for a ``protocol_version`` record; ``unversioned`` for none."""
    if not isinstance(versions, dict) or not versions:
        return UNVERSIONED
    return ", ".join(f"{p} {version_of(versions, p)}" for p in versions)


def version_conflicts(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """The protocols whose definition differs between rows: per protocol, each version found
    (``unversioned`` for older files) with its number of rows. Empty when all agree."""
    found: dict[str, dict[str, int]] = {}
    for row in rows:
        for protocol in row["protocols"]:
            version = version_of(row.get("protocol_version"), protocol)
            counts = found.setdefault(protocol, {})
            counts[version] = counts.get(version, 0) + 1
    return {p: counts for p, counts in found.items() if len(counts) > 1}


def conflicts_text(conflicts: dict[str, dict[str, int]]) -> str:
    """One sentence naming each protocol whose versions differ, e.g. ``box: v2 (3 results),
    unversioned (1 result)``."""
    parts = []
    for protocol, counts in conflicts.items():
        found = ", ".join(
            f"{v} ({n} result{'s' if n > 1 else ''})" for v, n in sorted(counts.items())
        )
        parts.append(f"{protocol}: {found}")
    return (
        "protocol definitions differ between these results, so their numbers are not "
        f"comparable ({'; '.join(parts)}); see CHANGELOG.md for what changed"
    )


def _row(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    summary = data.get("summary") or {}
    aggregates = data["aggregates"]
    versions = data.get("protocol_version")
    row: dict[str, Any] = {
        "model": summary.get("model", "?"),
        "adapter": adapter_label(summary),
        "weights": weights_label(summary),
        "data": summary.get("data"),
        "split": summary.get("split"),
        "image_size": summary.get("image_size"),
        "random_init": bool(summary.get("random_init", False)),
        "checkpoint": summary.get("checkpoint"),
        "objects": (data.get("counts") or {}).get("objects"),
        "path": str(path.parent),
        "protocols": list(aggregates),
        "protocol_version": versions if isinstance(versions, dict) else None,
        "protocol_versions": versions_text(versions),
    }
    for protocol, agg in aggregates.items():
        for key, value in agg.items():
            if key.startswith(("miou", "mdice", "noc", "nof")):
                row[f"{protocol}/{key}"] = value
    if data.get("kind") == "clips":
        row.update(clip_row_values(data))
    return row


def gather(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """Read every ``results.json`` under ``folder`` into one row each.

    A file that cannot be read or lacks ``aggregates`` is skipped with a warning naming it.

    Returns:
        Rows with ``model``, ``adapter`` (see :func:`adapter_label`), ``weights`` (see
        :func:`weights_label`), ``data``, ``split``, ``image_size``, ``random_init``,
        ``checkpoint``, ``objects``, ``path``, ``protocol_version`` (the record, None for an
        unversioned file), ``protocol_versions`` (as text) and ``<protocol>/<metric>`` values (``miou``, ``mdice``, ``noc85``, ``miou_at_clicks``, ...),
        sorted by model size, adapter, data and path.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    rows = []
    for path in sorted(folder.rglob("results.json")):
        try:
            data = json.loads(path.read_text())
            rows.append(_row(path, data))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("skipping %s: not a samtune results.json (%s)", path, exc)
    sizes = list(MODELS)

    def order(row: dict[str, Any]) -> tuple:
        size = sizes.index(row["model"]) if row["model"] in sizes else len(sizes)
        ad = row["adapter"]
        adapter = ADAPTER_ORDER.index(ad) if ad in ADAPTER_ORDER else len(ADAPTER_ORDER)
        return size, row["model"], adapter, ad, str(row["data"]), row["path"]

    return sorted(rows, key=order)


def _columns(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(key, title) of the metric columns, in protocol order of first appearance."""
    protocols: list[str] = []
    for row in rows:
        protocols += [p for p in row["protocols"] if p not in protocols]
    cols = []
    for p in protocols:
        cols += [
            (f"{p}/{k}", f"{p} {title}")
            for k, title in METRICS
            if any(f"{p}/{k}" in r for r in rows) or not any(f"{p}/JF" in r for r in rows)
        ]
        cols += clip_columns(rows, p)
        noc = sorted({k.split("/", 1)[1] for r in rows for k in r if k.startswith(f"{p}/noc")})
        cols += [(f"{p}/{k}", f"{p} NoC@{k[3:]}") for k in noc]
    return cols


def _cell(key: str, value: Any) -> Any:
    """A table cell: NoC (a mean number of clicks) with 2 decimals, random init as yes/no; the CSV
    keeps the raw values."""
    if key == "random_init" and isinstance(value, bool):
        return "yes" if value else "no"
    if "/noc" in key and isinstance(value, float) and math.isfinite(value):
        return f"{value:.2f}"
    return value


def _label(row: dict[str, Any], several_data: bool) -> str:
    label = f"{row['model']} / {row['adapter']}"
    return f"{label} / {row['data']}" if several_data else label


def write_comparison(rows: list[dict[str, Any]], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``comparison.md``, ``comparison.csv``, ``comparison.html`` and the clicks plot.

    Args:
        rows: from :func:`gather`.
        out_dir: folder to write into (created if needed).

    Returns:
        ``md``, ``csv``, ``html``, when any row ran the clicks protocol ``plot``, and for clip
        rows ``offset_plot`` (J vs frames from the prompt).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cols = _columns(rows)
    base = [("model", "model"), ("adapter", "adapter"), ("data", "data"), ("image_size", "size px")]
    base += [("random_init", "random init"), ("objects", "objects")]
    base += [("protocol_versions", "protocol version")]
    files: dict[str, Path] = {"csv": out / "comparison.csv"}

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow([k for k, _ in base + cols] + ["path"])
            for row in rows:
                values = [row.get(k) for k, _ in base + cols] + [row["path"]]
                writer.writerow(["" if v is None else v for v in values])

    atomic_write(files["csv"], write_csv)
    table = Table(
        [t for _, t in base + cols], [[_cell(k, r.get(k)) for k, _ in base + cols] for r in rows]
    )
    blocks: list[Block] = [Heading("samtune comparison", 1)]
    conflicts = version_conflicts(rows)
    if conflicts:
        blocks.append(Alert(conflicts_text(conflicts)))
    if any(r["random_init"] for r in rows):
        blocks.append(Alert("rows marked 'random init' were evaluated with RANDOM weights"))
    blocks += [
        Paragraph(
            f"{len(rows)} evaluation(s). zero-shot: untouched base weights (the official "
            "checkpoint, or random-init weights with nothing trained); unknown: a weights file "
            "of unrecorded origin. NoC: clicks to reach the IoU, the click budget when never "
            "reached."
        ),
        table,
    ]
    several_data = len({r["data"] for r in rows}) > 1
    curves = {
        _label(r, several_data): r["clicks/miou_at_clicks"]
        for r in rows
        if r.get("clicks/miou_at_clicks")
        and all(isinstance(v, float) and math.isfinite(v) for v in r["clicks/miou_at_clicks"])
    }
    if curves:
        sizes = {_label(r, several_data): r["model"] for r in rows}
        files["plot"] = plot_click_curves(
            curves,
            out / "comparison_clicks.png",
            title="mIoU vs clicks per model size",
            groups=sizes,
        )
        blocks += [Heading("mIoU vs clicks"), Image(files["plot"].name, "mIoU vs clicks")]
    labels = [_label(r, several_data) for r in rows]
    tables = offset_tables(rows, labels)
    if tables:
        blocks += [
            Heading("J by distance from the prompt"),
            Paragraph(
                "Clip protocols: mean region J of the objects on the annotated frame d frames "
                "after their prompt frame (+d); propagate_clicks after its last round."
            ),
        ]
        offset_curves: dict[str, list[float]] = {}
        offset_x: dict[str, list[int]] = {}
        for protocol, header, body in tables:
            blocks += [Heading(protocol, 3), Table(header, body)]
            for line in body:
                kept = [
                    (int(h[1:]), v)
                    for h, v in zip(header[1:], line[1:], strict=True)
                    if isinstance(v, float) and math.isfinite(v)
                ]
                if kept:
                    offset_x[f"{line[0]} / {protocol}"] = [d for d, _ in kept]
                    offset_curves[f"{line[0]} / {protocol}"] = [v for _, v in kept]
        if offset_curves:
            files["offset_plot"] = plot_click_curves(
                offset_curves,
                out / "comparison_j_by_offset.png",
                title="J vs frames from the prompt",
                xlabel="frames after the prompt frame",
                ylabel="J",
                x=offset_x,
            )
            blocks.append(Image(files["offset_plot"].name, "J vs frames from the prompt"))
    blocks += [
        Heading("Runs"),
        Table(
            ["row", "weights evaluated", "folder"],
            [[_label(r, True), r["weights"], r["path"]] for r in rows],
        ),
    ]
    files["md"] = out / "comparison.md"
    write_text_atomic(files["md"], to_markdown(blocks))
    files["html"] = out / "comparison.html"
    write_text_atomic(files["html"], to_html(blocks, title="samtune comparison"))
    return files
