"""What every section shares: names, the device, timing, memory readings and Markdown tables."""

from __future__ import annotations

import contextlib
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from samtune.evaluation.report.render import Table, to_markdown

REPO = Path(__file__).resolve().parents[2]
SIZES = ("sam2.1_hiera_tiny", "sam2.1_hiera_small", "sam2.1_hiera_base_plus", "sam2.1_hiera_large")
TRAIN_CONFIGS = (
    "frozen_cache_hit",
    "frozen_recomputed",
    "lora",
    "lora_checkpointing",  # Hiera blocks checkpointed
    "lora_checkpointing_all",  # Hiera blocks and prompt steps (decoder + loss) checkpointed
    "full",
)
SECTIONS = ("encoder", "train", "cache", "eval", "predictor", "clips")


def pick_device(name: str) -> torch.device:
    """The device named ``name``; ``auto``: the GPU when there is one, else the CPU.

    Raises:
        SystemExit: a CUDA device is asked for and there is none.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: no CUDA device is available")
    device = torch.device(name)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 matmuls on Ampere and later
        torch.backends.cudnn.allow_tf32 = True
    return device


def device_name(device: torch.device) -> str:
    """The GPU's name, or ``cpu (<processor>)``."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()})"


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that wall-clock times are the work's."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast for ``precision == "bf16"``, else nothing."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def timed(fn: Callable[[], Any], device: torch.device, reps: int) -> list[float]:
    """Seconds of each of ``reps`` calls of ``fn``."""
    out = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t0)
    return out


def _proc_status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_bytes() -> int:
    """Resident memory of this process now (0 where /proc is missing)."""
    kib = _proc_status_kib("VmRSS")
    return 1024 * kib if kib is not None else 0


def peak_rss_bytes() -> int:
    """Highest resident memory of this process so far."""
    kib = _proc_status_kib("VmHWM")
    if kib is not None:
        return 1024 * kib
    import resource  # Unix only; /proc answered on Linux already

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if platform.system() == "Darwin" else peak * 1024


def fmt(value: Any, spec: str = ".2f") -> str:
    """``value`` formatted with ``spec``, ``-`` for None."""
    return "-" if value is None else format(value, spec)


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table (then a blank line) through the reports' own renderer, as lines."""
    return to_markdown([Table(header, rows)]).split("\n")
