"""``auto`` for the device and the data loader's worker processes.

``device: auto`` (``samtune-eval``, ``samtune-predict``, ``samtune-serve``) is the first CUDA
device when PyTorch sees one, else the CPU. ``data.num_workers: auto`` is a share of the CPUs this
process may use: one less than the CPUs per local process (``LOCAL_WORLD_SIZE`` or ``SLURM_NTASKS_PER_NODE``
processes on the node), at most :data:`MAX_AUTO_WORKERS`. The environment variable
``SAMTUNE_NUM_WORKERS`` (a number) replaces ``auto`` everywhere; the test suite sets it to 0.
"""

from __future__ import annotations

import os
from typing import Any

from samtune.validation import ConfigValueError, check_number

MAX_AUTO_WORKERS = 8
NUM_WORKERS_ENV = "SAMTUNE_NUM_WORKERS"


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def local_processes() -> int:
    """Training processes on this node (1 unless a launcher says otherwise)."""
    for name in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def auto_num_workers() -> int:
    """What ``data.num_workers: auto`` means here (see the module docstring)."""
    forced = os.environ.get(NUM_WORKERS_ENV)
    if forced is not None and forced.strip() != "":
        return check_number(f"${NUM_WORKERS_ENV}", forced.strip(), ge=0, integer=True)
    per_process = usable_cpus() // local_processes()
    return max(0, min(MAX_AUTO_WORKERS, per_process - 1))


def resolve_num_workers(value: Any, key: str = "data.num_workers") -> int:
    """``value`` as a worker count: a number >= 0, or ``auto``."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return auto_num_workers()
    return check_number(key, value, ge=0, integer=True, also="'auto'")


def resolve_device(value: Any, key: str = "device") -> str:
    """``value`` as a torch device string: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Raises:
        ConfigValueError: for another value, or a CUDA device PyTorch does not see (naming the
            key, the value and how many CUDA devices there are).
    """
    import torch

    text = "auto" if value is None else str(value).strip().lower()
    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return "cpu"
    if text == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigValueError(f"{key}=mps, but PyTorch sees no MPS device; use {key}=cpu")
        return "mps"
    if text == "cuda" or text.startswith("cuda:"):
        index = text.partition(":")[2]
        if index and not index.isdigit():
            raise ConfigValueError(f"{key} must be cuda:<number>, got {value!r}")
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigValueError(
                f"{key}={value}, but PyTorch sees no CUDA device (torch.cuda.is_available() is "
                f"False); use {key}=cpu, or {key}=auto for a GPU when there is one"
            )
        if index and int(index) >= count:
            raise ConfigValueError(
                f"{key}={value}, but PyTorch sees {count} CUDA device(s) (cuda:0 to "
                f"cuda:{count - 1})"
            )
        return text
    raise ConfigValueError(f"{key} must be auto, cpu, cuda, cuda:<number> or mps, got {value!r}")
