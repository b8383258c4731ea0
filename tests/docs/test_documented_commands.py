"""The documentation is a test: every command that README.md, docs/*.md and the configs' header
comments show runs as written, from an empty folder outside the repository.

What the test changes in a command is in the tables below and nowhere else: placeholders become
the bundled data or the outputs of earlier commands, sizes become the smallest that exercise the
same code (one model size, 128 px, one epoch of one batch). A command whose program is in no table
fails the suite, so a command cannot be added to the documentation without being run here.

Commands of one document run in its order, in one working folder, as a user would type them.
The "official" checkpoint in the cache is made here (random weights in the official format).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NUCLEI = REPO / "samtune" / "data" / "demo" / "nuclei-mini"
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CONFIG_HEADERS = sorted((REPO / "samtune" / "configs").glob("*.yaml"))

# --- the tables --------------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Programs that serve until stopped (samtune-serve): started in the background, ready when
# /health answers, stopped before the next one starts and when the document is done. The
# documents' port 9001 becomes a free one.
SERVERS = {"samtune-serve"}
SERVE_PORT = _free_port()

# Placeholders of the documents -> what the test runs. Applied in this order, as plain text.
PLACEHOLDERS: list[tuple[str, str]] = [
    ("/data/cells/train.json", f"{NUCLEI}/annotations/train.json"),
    ("/data/cells/val.json", f"{NUCLEI}/annotations/val.json"),
    ("data.root=/data/cells", f"data.root={NUCLEI}/images"),
    ("root: /data/cells", f"root: {NUCLEI}/images"),
    ("/data/cells/images", f"{NUCLEI}/images"),
    ("/data/cells/masks", f"{NUCLEI}/masks"),
    ("127.0.0.1:9001", f"127.0.0.1:{SERVE_PORT}"),
    ("port=9001", f"port={SERVE_PORT}"),
]
# The data layouts of README's "Bring your data as it comes": /data/<name> is the folder <name>
# that tests.data.layouts.write_documented_layouts generates in the working folder.
LAYOUT_FOLDERS = (
    "isic", "stage1_train", "yolo_export", "roboflow_coco", "labelme", "tiles_rgb", "tiles",
    "nrrd", "my cells", "Zellkerne é", "retina", "manifest", "ctmr", "Task02_Heart", "brats",
    "totalseg", "DAVIS", "youtube_vos", "Fluo-N2DH-GOWT1", "movies", "VOC2012", "coco_single",
    "labelme_ignore", "fundus", "DRIVE", "microscopy", "mixed", "yolo_roboflow", "yolo_named",
    "yolo_file", "stacks",
)  # fmt: skip
PLACEHOLDERS += [(f"/data/{name}", name) for name in LAYOUT_FOLDERS]

# One model size serves for all four: they share every line of samtune's code.
SIZES = re.compile(r"sam2\.1_hiera_(small|base_plus|large)")

# Small sizes per program: key=value added when the command does not set the key itself
# (FORCED keys are replaced even when it does).
SMALL_TRAIN = {
    "model.image_size": "128",  # also replaces a size an experiment file sets
    "trainer.max_epochs": "1",
    "trainer.limit_train_batches": "1",
    "trainer.limit_val_batches": "1",
    "prompts.max_objects_per_image": "2",
    "prompts.correction_clicks": "1",
    "evaluation.max_clicks": "2",
}
SMALL: dict[str, dict[str, str]] = {
    "samtune-train": SMALL_TRAIN,
    "scripts/demo.py": SMALL_TRAIN,
    "samtune-eval": {"model.image_size": "128", "max_images": "1", "evaluation.max_clicks": "2"},
    "samtune-check-data": {"model.image_size": "128"},
    "samtune-predict": {"auto.points_per_side": "4"},
}
FORCED = {"trainer.max_epochs"}

# Commands that are documented but not run here (every command starting so), and why.
NOT_RUN: dict[str, str] = {
    "make test": "the test suites themselves (CI runs make test and make test-slow)",
    "make benchmark": "minutes to hours; tests/scripts/test_benchmark.py runs its sections at small sizes",
    ".venv/bin/python -m scripts.bench": "the same benchmark with its own options",
    "samtune-train -m hydra/launcher=slurm": "needs a SLURM cluster; tests/training/"
    "test_launcher.py runs the README's command with sbatch replaced by a recorder",
}


def not_run(command: str) -> bool:
    """Whether the documented command is one that the test leaves out (see NOT_RUN)."""
    return strip_comment(command).startswith(tuple(NOT_RUN))


# Files a document shows (a ```json or ```yaml block after a paragraph that names the file); the
# test writes them, placeholders mapped, where the reader would.
SHOWN_FILES = {
    "README.md": {
        "prompts.json",
        "my_configs/data/cells.yaml",
        "my_configs/experiment/cells_lora.yaml",
        "video_prompts.json",
        "slice_prompts.json",
    }
}


# --- reading the documents ---------------------------------------------------------------------

COMMAND = re.compile(r"^(samtune-[a-z-]+ \S|make \S|\.venv/bin/python \S|python \S)")


@dataclass
class Step:
    """One thing a document asks the reader to do."""

    doc: str
    line: int
    kind: str  # "shell", "python" or "file"
    text: str
    name: str = ""

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def _is_command(text: str) -> bool:
    return bool(COMMAND.match(text))


def read_steps(path: Path) -> list[Step]:
    """The commands, Python blocks and shown files of one Markdown document, in order."""
    steps: list[Step] = []
    lines = path.read_text().splitlines()
    i = 0
    last_file_named = None
    while i < len(lines):
        line = lines[i]
        fence = re.match(r"^```(\w*)\s*$", line)
        if fence:
            lang, start, body = fence.group(1), i + 1, []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            if lang in ("bash", "sh", "shell", ""):
                steps.extend(_shell_steps(path.name, start, body))
            elif lang == "python":
                steps.append(Step(path.name, start, "python", "\n".join(body)))
            elif lang in ("json", "yaml") and last_file_named in SHOWN_FILES.get(path.name, ()):
                steps.append(Step(path.name, start, "file", "\n".join(body), last_file_named))
        else:
            for span in re.findall(r"`([^`]+)`", line):
                if _is_command(span):
                    steps.append(Step(path.name, i + 1, "shell", span))
            for name in re.findall(r"`([\w./-]+\.(?:json|yaml))`", line):
                last_file_named = name
        i += 1
    return steps


def _shell_steps(doc: str, start: int, body: list[str]) -> list[Step]:
    steps, joined, first = [], "", None
    for offset, raw in enumerate(body):
        first = start + offset + 1 if not joined else first
        joined += raw.rstrip().removesuffix("\\") + (" " if raw.rstrip().endswith("\\") else "")
        if raw.rstrip().endswith("\\"):
            continue
        text = joined.strip()
        joined = ""
        if text and not text.startswith("#"):
            steps.append(Step(doc, first, "shell", text))
    return steps


def config_header_steps() -> list[Step]:
    """Command lines shown in the header comments of the top-level configs."""
    steps = []
    for path in CONFIG_HEADERS:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.startswith("#"):
                break
            text = line.lstrip("#").strip()
            if _is_command(text):
                steps.append(Step(f"configs/{path.name}", n, "shell", text))
    return steps


# --- turning a documented command into the one the test runs ----------------------------------


def strip_comment(command: str) -> str:
    """The command without a trailing ``# comment`` (outside quotes)."""
    tokens = shlex.shlex(command, posix=True, punctuation_chars=False)
    tokens.whitespace_split = True
    tokens.commenters = "#"
    kept = list(tokens)
    return shlex.join(kept) if kept else ""


def map_command(command: str, cwd: Path) -> list[str]:
    """The argv the test runs for a documented command (see the tables above)."""
    for placeholder, value in PLACEHOLDERS:
        command = command.replace(placeholder, value)
    argv = shlex.split(strip_comment(command))
    argv = [_dedupe_sweep(SIZES.sub("sam2.1_hiera_tiny", a)) for a in argv]
    argv = [_resolve_earlier_output(a, cwd) for a in argv]
    program = next((p for p in SMALL if any(a.endswith(p) for a in argv[:2])), None)
    if program:
        keys = {a.split("=", 1)[0] for a in argv if "=" in a}
        for key, value in SMALL[program].items():
            if key in FORCED and key in keys:
                argv = [f"{key}={value}" if a.startswith(key + "=") else a for a in argv]
            elif key not in keys:
                argv.append(f"{key}={value}")
    return argv


def _dedupe_sweep(arg: str) -> str:
    if "=" not in arg or "," not in arg:
        return arg
    key, values = arg.split("=", 1)
    if values.startswith(("{", "[", "'", '"')):
        return arg
    return key + "=" + ",".join(dict.fromkeys(values.split(",")))


def _resolve_earlier_output(arg: str, cwd: Path) -> str:
    """``ckpt=outputs/train/.../checkpoints/best.ckpt``: the newest such file in ``cwd``."""
    key, sep, value = arg.rpartition("=")
    if "/.../" not in value:
        return arg
    pattern = value.replace("/.../", "/**/")
    found = sorted(cwd.glob(pattern), key=lambda p: p.stat().st_mtime)
    assert found, f"no earlier output matches {value} in {cwd}"
    return f"{key}{sep}{found[-1]}"


# --- the environment a reader has --------------------------------------------------------------


@pytest.fixture(scope="module")
def reader_env(tmp_path_factory, tiny_state_dict) -> dict[str, str]:
    """A user's environment: the venv's programs first, an official checkpoint in the cache."""
    import torch

    cache = tmp_path_factory.mktemp("cache")
    torch.save({"model": tiny_state_dict}, cache / "sam2.1_hiera_tiny.pt")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "HYDRA"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        SAMTUNE_CACHE_DIR=str(cache),
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        PYTHONPATH=str(REPO),
    )
    return env


def prepare_folder(work: Path) -> None:
    """What the documents' placeholders stand for: a user's image folder, CT volumes and the
    data layouts users bring (see LAYOUT_FOLDERS)."""
    import nibabel as nib

    from tests.data.layouts import write_documented_layouts

    write_documented_layouts(work)

    cells = work / "cells"
    cells.mkdir()
    shutil.copy(sorted((NUCLEI / "images").glob("*.png"))[0], cells / "cells.png")
    rng = np.random.default_rng(0)
    for folder in ("ct", "labels"):
        (work / folder).mkdir()
    for case in range(3):
        hu = rng.normal(-100, 30, size=(48, 48, 6)).astype(np.float32)
        label = np.zeros(hu.shape, np.uint8)
        label[10:26, 12:30, 1:5] = 1
        label[30:40, 30:42, 2:6] = 2
        hu[label == 1], hu[label == 2] = 60, 200
        affine = np.diag([0.8, 0.8, 2.5, 1.0])
        nib.save(nib.Nifti1Image(hu, affine), str(work / "ct" / f"case{case}.nii.gz"))
        nib.save(nib.Nifti1Image(label, affine), str(work / "labels" / f"case{case}.nii.gz"))


def run_step(step: Step, work: Path, env: dict[str, str]) -> None:
    if step.kind == "file":
        text = step.text
        for placeholder, value in PLACEHOLDERS:
            text = text.replace(placeholder, value)
        (work / step.name).parent.mkdir(parents=True, exist_ok=True)
        (work / step.name).write_text(text + "\n")
        return
    if step.kind == "python":
        script = work / f"snippet_{step.line}.py"
        text = step.text
        for placeholder, value in PLACEHOLDERS:
            text = text.replace(placeholder, value)
        script.write_text(text + "\n")
        argv, cwd = [sys.executable, str(script)], work
    else:
        if not_run(step.text):
            return
        argv = map_command(step.text, work)
        cwd = work
        if argv[0] == "make":
            cwd = REPO
            # make runs in the checkout; the demo's run folder goes to the reader's folder
            demo_args = [*SMALL_ARGS_DEMO, f"hydra.run.dir={work / 'outputs' / 'demo'}"]
            argv = ["make", argv[1], f"DEMO_ARGS={shlex.join(demo_args)}"]
        elif argv[0].startswith(".venv/bin/python") or argv[0] == "python":
            cwd = REPO
            argv[0] = sys.executable
            if argv[1:2] == ["scripts/demo.py"]:  # its run folder too goes to the reader's folder
                argv.append(f"hydra.run.dir={work / 'outputs' / 'demo' / f'line{step.line}'}")
        else:
            assert argv[0].startswith("samtune-"), f"{step.id}: no table says how to run {argv[0]}"
    log = work / f"{step.doc.replace('/', '_')}_{step.line}.log"
    if argv[0] in SERVERS:
        start_server(step, argv, work, env, log)
        return
    with log.open("w") as out:
        code = subprocess.call(
            argv,
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=900,
        )
    printed = log.read_text()
    assert code == 0, (
        f"{step.id}: `{step.text}` ran as {argv} and exited {code}:\n{printed[-4000:]}"
    )
    assert "Traceback" not in printed, (
        f"{step.id}: `{step.text}` printed a traceback:\n{printed[-4000:]}"
    )


SMALL_ARGS_DEMO = [f"{k}={v}" for k, v in SMALL_TRAIN.items()]

_RUNNING: list[subprocess.Popen] = []


def start_server(step: Step, argv: list[str], work: Path, env: dict[str, str], log: Path) -> None:
    """Start a documented server in the background; return once its /health answers."""
    import time
    import urllib.request

    stop_servers()
    port = next((a.split("=", 1)[1] for a in argv if a.startswith("port=")), "9001")
    out = log.open("w")
    proc = subprocess.Popen(
        argv, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    out.close()
    _RUNNING.append(proc)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, (
            f"{step.id}: `{step.text}` ran as {argv} and exited {proc.returncode}:\n"
            f"{log.read_text()[-4000:]}"
        )
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{step.id}: `{step.text}` did not answer on port {port} in 300 s")


def stop_servers() -> None:
    """Stop the documented servers started so far (Ctrl-C, as a reader would)."""
    import signal

    while _RUNNING:
        proc = _RUNNING.pop()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=60)


# --- the tests -----------------------------------------------------------------------------------


def test_every_documented_program_is_known():
    """A command whose program no table covers fails here, before anything runs."""
    steps = [s for doc in DOCS for s in read_steps(doc)] + config_header_steps()
    assert steps, "no documented command found"
    for step in steps:
        if step.kind != "shell" or not_run(step.text):
            continue
        program = shlex.split(strip_comment(step.text))[0]
        assert program.startswith(("samtune-", "make", ".venv/bin/python", "python")), step.id
        if program == "make":
            target = shlex.split(step.text)[1]
            assert target in ("demo", "lint"), f"{step.id}: `make {target}` is in no table"


def test_map_command_uses_only_the_tables(tmp_path):
    run = tmp_path / "outputs" / "train" / "2026-01-01_00-00-00" / "checkpoints"
    run.mkdir(parents=True)
    (run / "best.ckpt").write_bytes(b"")
    argv = map_command(
        "samtune-train -m model=sam2.1_hiera_tiny,sam2.1_hiera_large adapter=frozen,lora "
        "trainer.max_epochs=20   # a sweep",
        tmp_path,
    )
    assert argv[:4] == ["samtune-train", "-m", "model=sam2.1_hiera_tiny", "adapter=frozen,lora"]
    assert "trainer.max_epochs=1" in argv and "model.image_size=128" in argv
    argv = map_command("samtune-eval ckpt=outputs/train/.../checkpoints/best.ckpt", tmp_path)
    assert argv[1] == f"ckpt={run / 'best.ckpt'}"
    argv = map_command("samtune-eval ckpt=x.pt model.image_size=1024", tmp_path)
    assert "model.image_size=1024" in argv and "model.image_size=128" not in argv


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_documented_commands_run(doc, reader_env, tmp_path_factory):
    """Every step of the document, in order, in one fresh folder outside the repository."""
    work = tmp_path_factory.mktemp(f"reader-{doc.stem}")
    assert REPO not in work.parents
    prepare_folder(work)
    steps = read_steps(doc)
    if doc.name == "README.md":
        steps += config_header_steps()
    # the files a document shows are there before its commands, as a reader makes them first
    try:
        for step in sorted(steps, key=lambda s: s.kind != "file"):
            run_step(step, work, reader_env)
    finally:
        stop_servers()
    if doc.name == "README.md":
        masks = json.loads((work / "masks" / "masks.json").read_text())
        assert masks, "samtune-predict wrote no masks"
