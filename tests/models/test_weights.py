"""Opening a checkpoint never runs its code: a pickled payload and a foreign adapter target are
refused, with a clear error, by every way samtune opens files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from samtune.models import CheckpointError
from samtune.models.weights import adapter_from_config, adapter_targets, is_none, safe_load
from tests.helpers import REPO

NAME = "sam2.1_hiera_tiny"


class _Payload:
    """Unpickling this creates the marker file (``open(path, "w")``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _meta(adapter: dict) -> dict:
    return {
        "model": {"name": NAME, "image_size": 128, "checkpoint": None, "random_init": True},
        "adapter": adapter,
        "data": "x",
        "metrics": {},
        "version": "0.1.0",
    }


FROZEN = {"_target_": "samtune.models.adapters.FrozenEncoder", "train_prompt_encoder": True}


def make_malicious(folder: Path) -> tuple[Path, Path, Path]:
    """A .ckpt with a pickled payload, one whose adapter target is builtins.open, and the marker
    file either would create."""
    marker = folder / "marker.txt"
    pickled = folder / "payload.ckpt"
    torch.save(
        {
            "state_dict": {"model.x": torch.zeros(1)},
            "samtune": _meta(FROZEN),
            "x": _Payload(marker),
        },
        pickled,
    )
    target = folder / "target.ckpt"
    evil = {"_target_": "builtins.open", "file": str(marker), "mode": "w"}
    torch.save({"state_dict": {"model.x": torch.zeros(1)}, "samtune": _meta(evil)}, target)
    assert not marker.exists()
    return pickled, target, marker


PICKLED = "refusing to open .*payload.ckpt.*could run code"
TARGET = "target.ckpt.*'builtins.open' is not one of samtune's adapters"


def test_safe_load_refuses_pickled_objects_and_keeps_plain_ones(tmp_path):
    pickled, _, marker = make_malicious(tmp_path)
    with pytest.raises(CheckpointError, match=PICKLED):
        safe_load(pickled)
    assert not marker.exists()
    plain = tmp_path / "plain.pt"
    torch.save({"model": {"w": torch.ones(2)}, "meta": [1, "a", None, (2.0,)]}, plain)
    assert safe_load(plain)["meta"] == [1, "a", None, (2.0,)]
    with pytest.raises(CheckpointError, match="not found: .*missing.pt"):
        safe_load(tmp_path / "missing.pt")


def test_adapter_allow_list():
    assert "samtune.models.adapters.LoRAAdapter" in adapter_targets()
    assert ".".join(("samtune", "adapters", "LoRAAdapter")) in adapter_targets()  # old files
    lora = adapter_from_config(
        {"_target_": "samtune.models.adapters.LoRAAdapter", "rank": 2}, "f.ckpt"
    )
    assert lora.rank == 2
    for target in ("os.system", "torch.load", "samtune.models.adapters.base.Adapter"):
        with pytest.raises(CheckpointError, match=f"f.ckpt.*{target}.*not one of samtune"):
            adapter_from_config({"_target_": target}, "f.ckpt")
    nested = {
        "_target_": "samtune.models.adapters.LoRAAdapter",
        "targets": [{"_target_": "os.system"}],
    }
    with pytest.raises(CheckpointError, match="not a plain value"):
        adapter_from_config(nested, "f.ckpt")


def test_none_words():
    assert all(is_none(v) for v in (None, "", "none", "None", " null "))
    assert not any(is_none(v) for v in ("auto", "a.pt", 0))


def _eval_cfg(ckpt: Path):
    evaluation = OmegaConf.load(REPO / "configs" / "evaluation" / "default.yaml")
    return OmegaConf.create(
        {
            "model": {"_target_": "samtune.models.ModelSpec", "name": NAME, "image_size": 128},
            "data": {"_target_": "samtune.data.SyntheticDataModule", "image_size": 128},
            "evaluation": evaluation,
            "ckpt": str(ckpt),
            "split": "val",
            "seed": 0,
            "device": "cpu",
            "max_images": None,
            "wandb": False,
        }
    )


def test_every_entry_point_refuses_malicious_checkpoints(tmp_path):
    """export, eval ckpt=, predict ckpt= and load_predictor, through their task functions."""
    from samtune import load_predictor
    from samtune.cli.eval import evaluate
    from samtune.inference.folder import run_predict
    from samtune.models.export import export_checkpoint

    pickled, target, marker = make_malicious(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    for ckpt, pattern in ((pickled, PICKLED), (target, TARGET)):
        calls = {
            "export": lambda c: export_checkpoint(c, tmp_path / "out.pt"),
            "eval": lambda c: evaluate(_eval_cfg(c), tmp_path / "eval", "x"),
            "predict": lambda c: run_predict(
                ckpt=str(c), images=images, out=tmp_path / "pred", mode="auto"
            ),
            "load_predictor": lambda c: load_predictor(str(c)),
        }
        for name, call in calls.items():
            with pytest.raises(CheckpointError, match=pattern):
                call(ckpt)
            assert not marker.exists(), name
    assert not (tmp_path / "out.pt").exists()


CLI_CASES = [
    ("export", ["ckpt={ckpt}", "out={tmp}/out.pt"]),
    ("eval", ["ckpt={ckpt}", "model.image_size=128", "hydra.run.dir={tmp}/eval"]),
    ("predict", ["ckpt={ckpt}", "images={tmp}", "out={tmp}/pred", "mode=auto"]),
]


def _cli(command: str, args: list[str], tmp_path: Path, ckpt: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), WANDB_MODE="offline")
    argv = [a.format(ckpt=ckpt, tmp=tmp_path) for a in args]
    return subprocess.run(
        [sys.executable, "-m", f"samtune.cli.{command}", *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_export_cli_refuses_pickled_payload(tmp_path):
    pickled, _, marker = make_malicious(tmp_path)
    proc = _cli("export", CLI_CASES[0][1], tmp_path, pickled)
    assert proc.returncode != 0
    assert "refusing to open" in proc.stderr and "payload.ckpt" in proc.stderr
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("command,args", CLI_CASES, ids=[c[0] for c in CLI_CASES])
@pytest.mark.parametrize("which", ["pickled", "target"])
def test_clis_refuse_malicious_checkpoints(tmp_path, command, args, which):
    pickled, target, marker = make_malicious(tmp_path)
    ckpt, expected = (
        (pickled, "refusing to open") if which == "pickled" else (target, "builtins.open")
    )
    proc = _cli(command, args, tmp_path, ckpt)
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert expected in proc.stderr, proc.stderr[-3000:]
    assert not marker.exists()
