"""Log an evaluation to Weights & Biases: tables, the mIoU-vs-clicks plot and overlays."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from samtune.evaluation.report.files import protocol_table
from samtune.evaluation.report.plots import plot_overlays
from samtune.evaluation.results import CSV_COLUMNS, EvalResult, threshold_key


def log_to_wandb(result: EvalResult, run: Any, *, prefix: str = "eval") -> dict[str, Any]:
    """Log ``result`` to the W&B ``run`` (``wandb.init(...)`` or ``WandbLogger.experiment``).

    Logs ``<prefix>/per_object`` and ``<prefix>/protocols`` tables, for the clicks protocol a
    ``<prefix>/miou_vs_clicks`` table and line plot, and ``<prefix>/overlays/<protocol>``
    images; each protocol's mIoU, mDice and NoC also go to ``run.summary``.

    Returns:
        The dict passed to ``run.log``.
    """
    import wandb

    aggregates = result.aggregates()
    noc_keys = [threshold_key(t) for t in result.noc_thresholds]
    rows = [[row.csv_row()[c] for c in CSV_COLUMNS] for row in result.rows]
    table = protocol_table(aggregates, noc_keys)
    payload: dict[str, Any] = {
        f"{prefix}/per_object": wandb.Table(columns=list(CSV_COLUMNS), data=rows),
        f"{prefix}/protocols": wandb.Table(columns=table.header, data=table.rows),
    }
    clicks = aggregates.get("clicks")
    if clicks and clicks["miou_at_clicks"]:
        curve = wandb.Table(
            columns=["clicks", "mIoU"],
            data=[[k + 1, v] for k, v in enumerate(clicks["miou_at_clicks"])],
        )
        payload[f"{prefix}/miou_vs_clicks"] = wandb.plot.line(
            curve, "clicks", "mIoU", title="mIoU vs clicks"
        )
    with tempfile.TemporaryDirectory() as tmp:
        for protocol in result.protocols:
            best, worst = result.gallery.examples(protocol)
            if best:
                png = plot_overlays(best, worst, Path(tmp) / f"{protocol}.png", title=protocol)
                payload[f"{prefix}/overlays/{protocol}"] = wandb.Image(
                    str(png), caption=f"{protocol}: best (top) and worst (bottom) objects"
                )
        run.log(payload)
    for protocol, agg in aggregates.items():
        for key in ["miou", "mdice"] + [f"noc{k}" for k in noc_keys]:
            if key in agg:
                run.summary[f"{prefix}/{protocol}/{key}"] = agg[key]
    return payload
