"""The skip log: one JSON line per image left out, written by any process, read by the main one.

DataLoader workers hold copies of a dataset, so what they record in memory is lost to the main
process. Each skip is therefore also appended to a shared file, one short line per write (which
``O_APPEND`` keeps whole when several workers write at once).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def append_skip(path: str | Path, *, split: str | None, file: str, reason: str, stage: str) -> None:
    """Append one skip record ``{"split", "file", "reason", "stage", "pid"}`` to ``path``."""
    record = {"split": split, "file": file, "reason": reason, "stage": stage, "pid": os.getpid()}
    line = json.dumps(record, ensure_ascii=True) + "\n"
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)


def read_skips(path: str | Path | None) -> list[dict[str, Any]]:
    """All records of a skip log (an empty list when there is no log yet).

    Raises:
        ValueError: when a line is not a JSON object, naming the file and line number.
    """
    if path is None or not Path(path).is_file():
        return []
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not a JSON line ({err})") from err
            if not isinstance(record, dict):
                raise ValueError(
                    f"{path}:{number}: expected a JSON object, got {type(record).__name__}"
                )
            records.append(record)
    return records
