"""Shared fixtures: the real SAM 2.1 architecture at a small image size, and the demo data."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

from samtune.models import build_sam2_model
from tests.helpers import SMALL_SIZE, make_blob_sample

torch.set_num_threads(min(2, os.cpu_count() or 1))
# data.num_workers=auto loads in the main process in tests (and in the programs they start)
os.environ.setdefault("SAMTUNE_NUM_WORKERS", "0")


REPO = Path(__file__).resolve().parents[1]
# what the test environment itself keeps in the checkout (the venv, caches, an editable install)
_OWN_PATHS = (".venv", ".pytest_cache", ".ruff_cache", "samtune.egg-info", "__pycache__")


def _untracked_files() -> set[str] | None:
    """Every file in the checkout that git does not track (ignored ones included), or ``None``
    outside a git checkout."""
    excludes = [f":(exclude,glob)**/{name}/**" for name in _OWN_PATHS]
    try:
        proc = subprocess.run(
            ["git", "status", "--porcelain", "-z", "--ignored", "-uall", "--", ".", *excludes],
            cwd=REPO,
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    entries = (entry.decode(errors="replace") for entry in proc.stdout.split(b"\0"))
    return {entry[3:] for entry in entries if entry.startswith(("??", "!!"))}


def pytest_sessionstart(session):
    session.config._samtune_untracked = _untracked_files()


def pytest_sessionfinish(session, exitstatus):
    """Tests write under tmp_path only: a file that appeared in the checkout fails the run."""
    before = getattr(session.config, "_samtune_untracked", None)
    after = _untracked_files()
    if before is None or after is None:
        return
    new = sorted(after - before)
    if new:
        shown = "\n  ".join(new[:20])
        more = f"\n  ... and {len(new) - 20} more" if len(new) > 20 else ""
        print(f"\nthe tests wrote into the checkout {REPO}:\n  {shown}{more}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def _clear_global_hydra():
    """sam2's import initialises Hydra's global state; tests that compose configs need it clear."""
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    yield
    GlobalHydra.instance().clear()


@pytest.fixture(scope="session")
def tiny_state_dict() -> dict[str, torch.Tensor]:
    """Random-init weights of the real sam2.1_hiera_tiny (the state dict is independent of image_size)."""

    torch.manual_seed(0)
    model = build_sam2_model("sam2.1_hiera_tiny", image_size=SMALL_SIZE)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_state_dict) -> Path:
    """An official-format ``{"model": state_dict}`` file for sam2.1_hiera_tiny, made here."""
    path = tmp_path_factory.mktemp("ckpt") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": tiny_state_dict}, path)
    return path


@pytest.fixture
def tiny_model(tiny_checkpoint):
    """A fresh sam2.1_hiera_tiny at 128 px loaded from ``tiny_checkpoint`` (eval mode, CPU)."""

    return build_sam2_model("sam2.1_hiera_tiny", image_size=SMALL_SIZE, checkpoint=tiny_checkpoint)


@pytest.fixture
def blob_sample():
    return make_blob_sample()
