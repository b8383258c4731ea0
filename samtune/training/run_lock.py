"""One run per output folder: a lock file holding the owner's pid and host.

A second run into a folder that a live run holds is refused before it spends any compute; a
lock left by a dead process on this host (or by an earlier attempt of the same SLURM job, which
a requeue restarts) is taken over with a log line.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from samtune.io_atomic import write_text_atomic

log = logging.getLogger(__name__)

LOCK_NAME = ".samtune.lock"
# set by samtune-train: the subfolder for the run's Hydra record, written once the lock is held
RECORD_SUBDIR_ENV = "SAMTUNE_HYDRA_RECORD_SUBDIR"


class RunLockError(RuntimeError):
    """The output folder belongs to another live run, or cannot be written."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


class RunLock:
    """Hold ``<folder>/.samtune.lock`` for the life of a run (a context manager).

    Args:
        folder: the run's output folder (created if missing).
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.held = False

    def acquire(self) -> RunLock:
        """Take the lock, or raise :class:`RunLockError` naming the live owner."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunLockError(f"cannot create the output folder {self.folder}: {exc}") from exc
        owner = _owner()
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale(owner)
                continue
            except OSError as exc:
                raise RunLockError(
                    f"cannot write to the output folder {self.folder}: {exc}"
                ) from exc
            with os.fdopen(fd, "w") as f:
                json.dump(owner, f)
            self.held = True
            return self
        raise RunLockError(f"could not take the lock {self.path}: another run keeps creating it")

    def _take_over_if_stale(self, me: dict[str, Any]) -> None:
        try:
            other = json.loads(self.path.read_text())
        except (OSError, ValueError):
            other = {}
        pid, host = other.get("pid"), other.get("host")
        same_job = me["slurm_job_id"] and other.get("slurm_job_id") == me["slurm_job_id"]
        dead = host == me["host"] and isinstance(pid, int) and not _alive(pid)
        if not (same_job or dead or not other):
            raise RunLockError(
                f"the output folder {self.folder} is in use by another run (pid {pid} on {host}, "
                f"since {other.get('started')}; lock file {self.path}). Choose another folder "
                "(hydra.run.dir=...), or wait for that run to end"
            )
        why = "an earlier attempt of this SLURM job" if same_job else f"dead pid {pid} on {host}"
        log.warning("taking over the stale lock %s left by %s", self.path, why)
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        """Remove the lock file if this process holds it."""
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def check_writable(folder: str | os.PathLike) -> None:
    """Create ``folder`` and write, then delete, a probe file in it; raise a clear error if not."""
    folder = Path(folder)
    probe = folder / f".write-test-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise RunLockError(
            f"cannot write checkpoints to {folder}: {exc}; fix the permissions or choose another "
            "folder before training starts"
        ) from exc


def write_hydra_record(folder: str | os.PathLike, cfg: Any) -> Path | None:
    """Write the Hydra record of the running job (``config.yaml``: ``cfg``; ``hydra.yaml``;
    ``overrides.yaml``, as Hydra itself writes them) into ``<folder>/<subdir>``, atomically.

    For ``samtune-train``, which holds the run lock first (see
    :func:`samtune.cli.train.record_after_lock_args`): ``subdir`` comes from the environment it
    set; None is returned (nothing written) outside such a job.
    """
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    subdir = os.environ.get(RECORD_SUBDIR_ENV)
    if not subdir or not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    target = Path(folder) / subdir
    target.mkdir(parents=True, exist_ok=True)
    write_text_atomic(target / "config.yaml", OmegaConf.to_yaml(cfg))
    write_text_atomic(target / "hydra.yaml", OmegaConf.to_yaml(HydraConfig.instance().cfg))
    write_text_atomic(target / "overrides.yaml", OmegaConf.to_yaml(hydra_cfg.overrides.task))
    return target
