"""``samtune-report <folder> [--out DIR] [--wandb]``: compare every evaluation under a folder.

Finds each ``results.json`` below ``folder`` and writes ``comparison.md``, ``.csv``, ``.html``
and ``comparison_clicks.png`` (model size x adapter; per protocol mIoU, mDice, NoC). Results
whose protocol definitions differ (``protocol_version``; ``unversioned`` for older files) are
flagged on the console and at the top of the comparison.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from samtune.evaluation.report.compare import (
    conflicts_text,
    gather,
    version_conflicts,
    write_comparison,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of ``samtune-report``."""
    parser = argparse.ArgumentParser(prog="samtune-report", description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder searched for results.json files")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: folder)")
    parser.add_argument(
        "--wandb",
        action="store_true",
        help="also log the table and plot to W&B (offline unless WANDB_MODE says otherwise)",
    )
    return parser.parse_args(argv)


def log_comparison_to_wandb(rows: list[dict], files: dict[str, Path]) -> None:
    """Log the comparison table (and plot) to a new W&B run of job type ``report``."""
    import os

    import wandb

    run = wandb.init(
        project="samtune", job_type="report", mode=os.environ.get("WANDB_MODE", "offline")
    )
    columns = sorted({k for r in rows for k in r if not isinstance(r[k], (list, dict))})
    data = [[r.get(c) for c in columns] for r in rows]
    payload = {"comparison": wandb.Table(columns=columns, data=data)}
    if "plot" in files:
        payload["comparison_clicks"] = wandb.Image(str(files["plot"]))
    run.log(payload)
    run.finish()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``samtune-report``; returns the exit status."""
    args = parse_args(argv)
    rows = gather(args.folder)
    if not rows:
        print(f"samtune-report: no results.json found under {args.folder}", file=sys.stderr)
        return 1
    conflicts = version_conflicts(rows)
    if conflicts:  # also at the top of the comparison files
        print(f"samtune-report: WARNING: {conflicts_text(conflicts)}", file=sys.stderr)
    files = write_comparison(rows, args.out or args.folder)
    if args.wandb:
        log_comparison_to_wandb(rows, files)
    print(f"{len(rows)} evaluation(s) compared: {files['md']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
