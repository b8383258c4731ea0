"""``samtune-check-data``: read every file of a dataset and list what is wrong with it.

Prints counts (images or volume slices, objects per class, empty and tiny masks, every drop
category, usable images, size and spacing outliers) and every unreadable or mismatched file,
writes the same as ``data_check.json`` into the Hydra run folder, and exits with status 1 when
any file is bad or a split has no usable image.
With ``to_coco=out.json`` it also writes every image and object it read as one COCO file.
The datamodule is built with ``on_error=skip``, so all problems are listed, not just the first.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from samtune.cli._hydra import run_hydra_app
from samtune.data.check import check_datamodule, format_check
from samtune.data.coco_export import write_coco
from samtune.data.datamodules.clips import ClipDataModule
from samtune.io_atomic import write_json_atomic

log = logging.getLogger(__name__)

SKIP_LOG_NAME = "data_check_skips.jsonl"


def check_data(cfg: DictConfig, out_dir: Path, data_name: str | None = None) -> dict[str, Any]:
    """Build ``cfg.data`` with ``on_error=skip``, check it, and write ``data_check.json``.

    Args:
        cfg: the composed ``check_data`` config.
        out_dir: the folder ``data_check.json`` (and the skip log) go to.
        data_name: the data choice, recorded in the report.

    Returns:
        The report (see :func:`samtune.data.check.check_datamodule`) with ``data`` and
        ``report_file`` added.
    """
    from hydra.utils import instantiate

    out_dir.mkdir(parents=True, exist_ok=True)
    overrides: dict[str, Any] = {}
    if "on_error" in cfg.data:
        overrides["on_error"] = "skip"
    if "skip_log" in cfg.data:
        skip_log = out_dir / SKIP_LOG_NAME
        skip_log.unlink(missing_ok=True)  # a fresh log: only this check's findings
        overrides["skip_log"] = str(skip_log)
    datamodule = instantiate(cfg.data, **overrides)
    if cfg.get("to_coco") and isinstance(datamodule, ClipDataModule):
        raise ValueError(
            f"to_coco writes images and their objects; data={data_name} holds clips (videos, "
            "volumes, time-lapse), which COCO cannot hold: leave to_coco out"
        )
    report = check_datamodule(
        datamodule,
        splits=list(cfg.splits),
        tiny_area=cfg.tiny_area,
        size_outlier_factor=float(cfg.size_outlier_factor),
    )
    report = {"data": data_name, **report, "report_file": str(out_dir / "data_check.json")}
    if cfg.get("to_coco"):
        report["to_coco"] = write_coco(datamodule, cfg.to_coco, splits=list(cfg.splits))

    write_json_atomic(out_dir / "data_check.json", report, indent=2, default=str)
    print(format_check(report, max_listed=int(cfg.max_listed)), flush=True)
    print(f"report: {out_dir / 'data_check.json'}", flush=True)
    if "to_coco" in report:
        coco = report["to_coco"]
        splits = ", ".join(f"{split} {n}" for split, n in coco["per_split"].items())
        print(
            f"COCO: {coco['images']} images ({splits}), {coco['annotations']} objects, "
            f"{len(coco['categories'])} categories written to {coco['file']}",
            flush=True,
        )
    return report


def task(cfg: DictConfig) -> None:
    """The Hydra task: check the data; exit with status 1 when a file or a split is bad.

    Raises:
        SystemExit: status 1 when the check found a bad file, a split that cannot be built or a
            split with no usable image.
    """
    from hydra.core.hydra_config import HydraConfig

    runtime = HydraConfig.get().runtime
    report = check_data(cfg, Path(runtime.output_dir), str(runtime.choices.get("data")))
    if not report["ok"]:
        raise SystemExit(1)


def main() -> None:
    """Entry point of ``samtune-check-data`` (``--to-coco out.json`` is read as ``to_coco=``)."""
    sys.argv[1:] = plain_overrides(sys.argv[1:])
    run_hydra_app(task, "check_data")


def plain_overrides(args: list[str]) -> list[str]:
    """``--to-coco out.json`` and ``--to-coco=out.json`` as the Hydra override ``to_coco=out.json``."""
    out: list[str] = []
    rest = iter(args)
    for arg in rest:
        if arg == "--to-coco":
            value = next(rest, None)
            if value is None:
                raise SystemExit("--to-coco needs a file name: --to-coco out.json")
            out.append(f"to_coco={_hydra_value(value)}")
        elif arg.startswith("--to-coco="):
            out.append(f"to_coco={_hydra_value(arg.split('=', 1)[1])}")
        else:
            out.append(arg)
    return out


def _hydra_value(value: str) -> str:
    """``value`` quoted for Hydra's override grammar when it holds more than plain path text."""
    if re.fullmatch(r"[A-Za-z0-9_./~:-]+", value):
        return value
    return "'" + value.replace("'", "\\'") + "'"


if __name__ == "__main__":
    main()
