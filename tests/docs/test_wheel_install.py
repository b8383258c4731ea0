"""samtune installed as users install it: a wheel in a fresh environment, no checkout, no editable
install, commands run from an empty folder.

The throwaway environment reuses the test environment's third-party packages (torch, sam2, ...)
through a path file, so nothing is downloaded; samtune itself comes only from the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(argv: list, cwd: Path, env: dict[str, str], timeout: int = 900) -> str:
    proc = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    printed = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}:\n{printed[-4000:]}"
    return printed


def source_copy(dest: Path) -> Path:
    """The checkout's files (tracked, and new ones git does not ignore) copied to ``dest``: a
    wheel is built there, since building in place writes ``build/`` and ``*.egg-info`` into the
    checkout."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (entry.decode() for entry in listed)):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A fresh venv with samtune from a wheel built from this checkout, and its environment."""
    root = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", SAMTUNE_CACHE_DIR=str(root / "cache"))
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            root / "dist",
            source_copy(root / "src"),
        ],
        root,
        env,
    )
    wheel = next((root / "dist").glob("samtune-*.whl"))
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", venv], root, env)
    purelib = _run(
        [
            venv / "bin" / "python",
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ],
        root,
        env,
    ).strip()
    # the test environment's packages come after the venv's own (samtune from the wheel wins)
    Path(purelib, "test_env_packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    _run(
        [venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel],
        root,
        env,
    )
    return venv, env


def test_wheel_holds_configs_and_demo_data(installed, tmp_path):
    venv, env = installed
    printed = _run(
        [
            venv / "bin" / "python",
            "-c",
            "import samtune, pathlib; p = pathlib.Path(samtune.__file__).parent; print(p); "
            "print(len(list((p / 'configs').rglob('*.yaml')))); "
            "print(len(list((p / 'data' / 'demo' / 'nuclei-mini' / 'images').glob('*.png'))))",
        ],
        tmp_path,
        env,
    )
    where, n_configs, n_images = printed.split()
    assert Path(where).is_relative_to(venv), f"samtune imported from {where}, not the wheel"
    assert int(n_configs) >= 20 and int(n_images) == 32


def test_train_and_eval_from_an_empty_folder(installed, tmp_path):
    venv, env = installed
    work = tmp_path / "empty"
    work.mkdir()
    _run([venv / "bin" / "samtune-train", "experiment=smoke"], work, env)
    summaries = list((work / "outputs" / "smoke").glob("*/summary.json"))
    assert len(summaries) == 1, list(work.rglob("*"))[:20]
    run = summaries[0].parent
    ckpt = next((run / "checkpoints").glob("*.ckpt"))
    _run(
        [venv / "bin" / "samtune-eval", f"ckpt={ckpt}", "max_images=2", "evaluation.max_clicks=2"],
        work,
        env,
    )
    results = list((work / "outputs" / "eval").glob("*/results.json"))
    assert len(results) == 1
    summary = json.loads(results[0].read_text())
    assert summary["summary"]["image_size"] == 128  # recorded by the smoke run
    assert not (work / "configs").exists()
