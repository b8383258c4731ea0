"""The notebooks in notebooks/ run from top to bottom."""

from __future__ import annotations

import pytest

from tests.helpers import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
EXPECTED = {  # what each notebook must print
    "quickstart.ipynb": ("mIoU", "IoU with the ground truth"),
    "medical.ipynb": (
        "OK: no bad files",
        "exit status 0",
        "slice mIoU",
        "per-volume Dice liver",
        "keyslice_box Dice",
    ),
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("SAMTUNE_CACHE_DIR", str(tmp_path / "cache"))  # never a real download
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    missing = [text for text in EXPECTED[path.name] if text not in outputs]
    assert not missing, f"{path.name} did not print {missing}:\n{outputs[-3000:]}"
