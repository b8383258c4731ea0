"""``samtune-serve`` and ``samtune-export format=roboflow`` from their Hydra configs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from hydra import initialize_config_dir

from samtune.cli._hydra import CONFIG_DIR
from samtune.models.adapters import LoRAAdapter
from samtune.serving.run import build_server, startup_report
from tests.helpers import REPO, SMALL_SIZE, make_blob_sample
from tests.models.helpers import make_lightning_checkpoint
from tests.serving.helpers import b64_image, best_masks, official_predictor, png_bytes, rle_to_mask


def compose(name: str, overrides: list[str]):
    """Compose a samtune config (after anything, e.g. importing sam2, set Hydra's globals)."""
    from hydra import compose as hydra_compose
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(name, overrides=overrides)


def compose_serve(overrides: list[str]):
    from omegaconf import OmegaConf

    cfg = compose("serve", overrides)
    cfg.paths.cache_dir = None  # outside a Hydra run
    return OmegaConf.to_container(cfg, resolve=False)


def test_zero_shot_model_from_the_model_group_with_a_loud_no_key_warning():
    cfg = compose_serve(
        [
            "model=sam2.1_hiera_tiny",
            "ckpt=none",
            "model.checkpoint=null",
            f"model.image_size={SMALL_SIZE}",
        ]
    )
    server = build_server(cfg)
    [(version, served)] = server.models.items()
    assert version == "hiera_tiny" and served.image_size == SMALL_SIZE
    assert served.describe()["random_init"] is True
    report = startup_report(server, host="127.0.0.1", port=9001)
    assert "NO API KEYS" in report and "RANDOM WEIGHTS" in report
    with pytest.raises(ValueError, match="model size is needed"):
        build_server(compose_serve([]))


def test_export_roboflow_cli_then_serve_it_under_two_version_ids(tmp_path, tiny_checkpoint):
    """A LoRA run exported for Roboflow's runtime by samtune-export's task, then served from the
    folder next to an official-format file; masks equal sam2's predictor on the exported weights."""
    from samtune.cli.export import export_task

    ckpt = tmp_path / "lora.ckpt"
    make_lightning_checkpoint(ckpt, LoRAAdapter(rank=4), seed=3)
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "export", overrides=[f"ckpt={ckpt}", f"out={tmp_path / 'rf'}", "format=roboflow"]
        )
    export_task(cfg)
    assert (tmp_path / "rf" / "sam_configuration.json").is_file()

    cfg = compose_serve(
        [
            f"+models.tuned.ckpt={tmp_path / 'rf'}",
            f"+models.hiera_tiny.ckpt={tiny_checkpoint}",
            f"+models.hiera_tiny.image_size={SMALL_SIZE}",
            "api_keys=[k1,k2]",
        ]
    )
    server = build_server(cfg)
    assert list(server.models) == ["tuned", "hiera_tiny"] and server.keys.keys == ["k1", "k2"]
    tuned = server.models["tuned"].describe()
    assert tuned["adapter"] == "lora" and tuned["image_size"] == SMALL_SIZE
    assert tuned["weights"] == str(tmp_path / "rf" / "model.pt")

    from samtune.serving.app import create_app
    from samtune.serving.run import background_server

    image = make_blob_sample().image
    official = official_predictor(tmp_path / "rf" / "model.pt", SMALL_SIZE)
    expected, _ = best_masks(official, image, box=np.array([30.0, 20.0, 90.0, 70.0]))
    body = {
        "image": b64_image(png_bytes(image)),
        "prompts": {"box": {"x": 60, "y": 45, "width": 60, "height": 50}},  # a single prompt
        "format": "rle",
        "api_key": "k2",
    }
    with background_server(create_app(server)) as url:
        tuned_answer = httpx.post(
            f"{url}/sam2/segment_image", json={**body, "sam2_version_id": "tuned"}, timeout=60
        )
        plain_answer = httpx.post(
            f"{url}/sam2/segment_image", json={**body, "sam2_version_id": "hiera_tiny"}, timeout=60
        )
    got = rle_to_mask(tuned_answer.json()["predictions"][0]["masks"])
    np.testing.assert_array_equal(got, expected[0])
    assert not np.array_equal(got, rle_to_mask(plain_answer.json()["predictions"][0]["masks"]))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_samtune_serve_command(tmp_path):
    """The console command from an empty folder: Hydra output under outputs/serve/<time>/,
    the loud no-key warning, /health and /info answered, Ctrl-C stops it."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "samtune.cli.serve",
            "model=sam2.1_hiera_tiny",
            "ckpt=none",
            "model.checkpoint=null",
            f"model.image_size={SMALL_SIZE}",
            f"port={port}",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        info = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                info = httpx.get(f"http://127.0.0.1:{port}/info", timeout=5).json()
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        assert info is not None, f"the server did not answer (exit code {proc.poll()})"
        assert info["models"][0]["sam2_version_id"] == "hiera_tiny" and info["auth"] is False
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output[-3000:]
    assert "NO API KEYS" in output
    runs = list((tmp_path / "outputs" / "serve").iterdir())
    assert len(runs) == 1 and (runs[0] / ".hydra" / "config.yaml").is_file()
