"""samtune-predict loses nothing and leaves nothing half-written: an image that fails leaves
``out`` as it was; an ``out`` that cannot be written is refused, naming it, before the model
loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from samtune.data.sample import DataError
from samtune.inference.folder import run_predict
from samtune.inference.mask_files import OutputError
from tests.helpers import REPO
from tests.inference.helpers import write_images

PROMPTS = {"a.png": [{"box": [30, 20, 90, 70]}], "b.png": [{"points": [[30, 25]]}]}


def _data(tmp_path):
    images = tmp_path / "images"
    write_images(images)
    (tmp_path / "prompts.json").write_text(json.dumps(PROMPTS))
    return images, tmp_path / "prompts.json"


def test_a_failure_on_the_second_image_leaves_out_as_it_was(tuned, tmp_path):
    _, exported = tuned
    images, prompts = _data(tmp_path)
    data = (images / "b.png").read_bytes()
    (images / "b.png").write_bytes(data[: len(data) // 2])  # header intact, pixels cut
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=r"b\.png"):
        run_predict(ckpt=str(exported), images=images, out=out, prompts=prompts)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # no mask of a.png, no staging
    # with the image mended the same command writes everything
    write_images(images)
    run_predict(ckpt=str(exported), images=images, out=out, prompts=prompts)
    assert sorted(p.name for p in out.iterdir()) == [
        "a_0.png",
        "b_0.png",
        "masks.json",
        "notes.txt",
    ]


def test_an_out_that_cannot_be_written_is_refused_before_the_model_loads(tuned, tmp_path):
    _, exported = tuned
    images, prompts = _data(tmp_path)
    existing = tmp_path / "masks.png"
    existing.write_bytes(b"not a folder")
    for out, why in ((existing, "is an existing file"), (existing / "sub", "cannot be written")):
        with pytest.raises(OutputError, match=why) as info:
            run_predict(ckpt="/no/such/model.pt", images=images, out=out, prompts=prompts)
        assert str(out) in str(info.value) and ".tmp" not in str(info.value)
    assert existing.read_bytes() == b"not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_is_refused(tuned, tmp_path):
    images, prompts = _data(tmp_path)
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="cannot be written"):
            run_predict(ckpt=str(tuned[1]), images=images, out=out, prompts=prompts)
    finally:
        out.chmod(0o755)


def test_the_cli_says_it_in_one_line(tuned, tmp_path):
    _, exported = tuned
    images, prompts = _data(tmp_path)
    existing = tmp_path / "masks.png"
    existing.write_bytes(b"x")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "samtune.cli.predict",
            f"ckpt={exported}",
            f"images={images}",
            f"prompts={prompts}",
            f"out={existing}",
            f"hydra.run.dir={tmp_path / 'hydra'}",
        ],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    text = proc.stdout + proc.stderr
    assert f"cannot write: out={existing} is an existing file" in text
    assert "Traceback" not in text and "FileExistsError" not in text
