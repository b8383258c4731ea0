"""Find a SAM 2.1 checkpoint: explicit path, then the cache, then the official URL.

A download is resumable (an interrupted ``.part`` file is continued with an HTTP Range
request), written atomically (renamed into place only when complete), checked against the
size the server announced, and its SHA-256 is recorded next to it. Every later load
verifies the file against that recorded hash. No hash is hard-coded: the first download
is the reference.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from samtune.io_atomic import write_json_atomic
from samtune.models.registry import get_model_info
from samtune.models.state_dicts import CheckpointError, is_none

log = logging.getLogger(__name__)

CACHE_DIR_VARIABLE = "SAMTUNE_CACHE_DIR"


def default_cache_dir() -> Path:
    """Where official checkpoints are kept: ``$SAMTUNE_CACHE_DIR``, else
    ``~/.cache/samtune/checkpoints``."""
    env = os.environ.get(CACHE_DIR_VARIABLE)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "samtune" / "checkpoints"


CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def hash_record_path(path: Path) -> Path:
    """Where the SHA-256 of a downloaded ``path`` is recorded (``<name>.sha256.json``)."""
    return path.with_name(path.name + ".sha256.json")


def verify_recorded_hash(path: Path) -> None:
    """Check ``path`` against the hash recorded at download time, if one was recorded."""
    record = hash_record_path(path)
    if not record.is_file():
        return
    expected = json.loads(record.read_text())["sha256"]
    actual = sha256_of(path)
    if actual != expected:
        raise CheckpointError(
            f"checkpoint {path} has SHA-256 {actual}, but {expected} was recorded when it was "
            f"downloaded ({record}); the file changed or is damaged: delete both files to download again"
        )


def download(url: str, dest: Path, *, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest`` resumably and atomically, and record its SHA-256.

    Raises:
        CheckpointError: when the download cannot complete, saying where to put the file by hand.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = getattr(response, "status", 200)
            if have and status != 206:  # server ignored the range: start over
                have = 0
            length = response.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            with open(part, "ab" if have else "wb") as f:
                for block in iter(lambda: response.read(CHUNK), b""):
                    f.write(block)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise CheckpointError(
            f"could not download {url} ({exc}). Without network, download it elsewhere and put it at "
            f"{dest} (or pass model.checkpoint=/path/to/{dest.name}){_partial_note(part)}"
        ) from exc
    size = part.stat().st_size
    if total is not None and size != total:
        raise CheckpointError(
            f"download of {url} is incomplete: {size} of {total} bytes in {part}; run again to resume"
        )
    digest = sha256_of(part)
    os.replace(part, dest)
    write_json_atomic(
        hash_record_path(dest), {"url": url, "bytes": size, "sha256": digest}, indent=1
    )
    log.info("downloaded %s to %s (%d bytes, sha256 %s)", url, dest, size, digest)
    return dest


def _partial_note(part: Path) -> str:
    """What the failure message says about ``part``: kept and resumed when it holds bytes; an
    empty one is removed and not mentioned."""
    size = part.stat().st_size if part.is_file() else 0
    if size == 0:
        part.unlink(missing_ok=True)
        return ""
    return f"; the {size} bytes downloaded so far are kept at {part} and resumed next time"


def resolve_checkpoint(
    name: str,
    checkpoint: str | os.PathLike | None,
    *,
    cache_dir: str | os.PathLike | None = None,
    allow_download: bool = True,
    url: str | None = None,
) -> Path | None:
    """Return the checkpoint file to load for model ``name``.

    Args:
        name: registry name, e.g. ``sam2.1_hiera_tiny``.
        checkpoint: an explicit path; ``"auto"`` for cache-then-download; None for random init.
        cache_dir: where official checkpoints are kept (default :func:`default_cache_dir`).
        allow_download: try the official URL when the cache has no file.
        url: override of the official URL (mirrors, tests).

    Raises:
        CheckpointError: naming the missing file and where to put it.
    """
    if is_none(checkpoint) or str(checkpoint).strip().lower() == "random":
        return None
    info = get_model_info(name)
    if str(checkpoint) != "auto":
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise CheckpointError(f"model.checkpoint={path} does not exist")
        verify_recorded_hash(path)
        return path
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    cached = cache / info.checkpoint_file
    if cached.is_file():
        verify_recorded_hash(cached)
        return cached
    if not allow_download:
        raise CheckpointError(
            f"no checkpoint for {name}: {cached} does not exist and downloads are off. "
            f"Put {info.checkpoint_file} (from {info.url}) there, or pass model.checkpoint=/path/to/file"
        )
    return download(url or info.url, cached)
