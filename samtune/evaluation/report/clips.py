"""Clip results in the comparison: J, F and J&F per protocol, and J by distance from the prompt.

Read from a clip ``results.json`` (``kind: clips``): ``aggregates`` holds each protocol's means
(and ``JF_at_round`` of ``propagate_clicks``), ``clips`` the per-object, per-frame values that
the distance table is computed from.
"""

from __future__ import annotations

from typing import Any

import numpy as np

CLIP_METRICS = (("J", "J"), ("F", "F"), ("JF", "J&F"))


def j_by_offset(scores: dict[str, Any]) -> dict[int, float]:
    """Mean region J at each distance from the prompt frame, ``{frames after it: mean J}``.

    Each object contributes its J on the scored frame ``prompt_frame + d`` to offset ``d``; the
    mean is over all objects of all videos with a scored frame there (frames without an
    annotation have none). For ``propagate_clicks`` the values are those after the last round
    and the distance is from the first prompt.

    Args:
        scores: one protocol's entry of ``results.json``'s ``clips``.
    """
    found: dict[int, list[float]] = {}
    for video in (scores.get("per_video") or {}).values():
        for obj in (video.get("objects") or {}).values():
            start = int(obj["prompt_frame"])
            for frame, j in zip(obj["frames"], obj["J_per_frame"], strict=True):
                if j is not None:
                    found.setdefault(int(frame) - start, []).append(float(j))
    return {d: float(np.mean(v)) for d, v in sorted(found.items())}


def clip_row_values(data: dict[str, Any]) -> dict[str, Any]:
    """The comparison row's clip values: ``<protocol>/J``, ``/F``, ``/JF``, ``/JF@<round>`` and
    ``<protocol>/J_at_offset`` (see :func:`j_by_offset`); empty for an image result."""
    row: dict[str, Any] = {}
    for protocol, agg in (data.get("aggregates") or {}).items():
        if not isinstance(agg, dict):
            continue
        for key, _ in CLIP_METRICS:
            if key in agg:
                row[f"{protocol}/{key}"] = agg[key]
        for r, value in enumerate(agg.get("JF_at_round") or []):
            row[f"{protocol}/JF@{r}"] = value
    for protocol, scores in (data.get("clips") or {}).items():
        offsets = j_by_offset(scores)
        if offsets:
            row[f"{protocol}/J_at_offset"] = offsets
    return row


def clip_columns(rows: list[dict[str, Any]], protocol: str) -> list[tuple[str, str]]:
    """(key, title) of ``protocol``'s clip columns that any row has: J, F, J&F, then J&F after
    each round of clicks."""
    cols = [
        (f"{protocol}/{k}", f"{protocol} {title}")
        for k, title in CLIP_METRICS
        if any(f"{protocol}/{k}" in r for r in rows)
    ]
    rounds = sorted(
        {int(k.rsplit("@", 1)[1]) for r in rows for k in r if k.startswith(f"{protocol}/JF@")}
    )
    cols += [(f"{protocol}/JF@{r}", f"{protocol} J&F@{r}") for r in rounds]
    return cols


def offset_tables(
    rows: list[dict[str, Any]], labels: list[str]
) -> list[tuple[str, list[str], list[list[Any]]]]:
    """Per protocol with per-frame values, ``(protocol, header, rows)`` of J by distance from the
    prompt frame: one row per evaluation (``labels``), one column per offset."""
    protocols: list[str] = []
    for row in rows:
        protocols += [p for p in row["protocols"] if p not in protocols]
    tables = []
    for protocol in protocols:
        key = f"{protocol}/J_at_offset"
        offsets = sorted({d for r in rows for d in (r.get(key) or {})})
        if not offsets:
            continue
        header = ["evaluation"] + [f"+{d}" for d in offsets]
        body = [
            [label] + [(r.get(key) or {}).get(d) for d in offsets]
            for label, r in zip(labels, rows, strict=True)
            if r.get(key)
        ]
        tables.append((protocol, header, body))
    return tables
