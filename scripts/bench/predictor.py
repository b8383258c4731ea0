"""Section ``predictor``: set_image + one predict, ``samtune.load_predictor`` vs sam2's own build."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

import samtune
from samtune.models import get_model_info
from scripts.bench.common import autocast, table, timed
from scripts.bench.compose import build_model, compose_config, data_overrides, load_samples
from scripts.bench.evaluation import official_predictor


def sam2_hydra() -> None:
    """``build_sam2`` composes sam2's configs through Hydra's global state, which importing sam2
    sets up once; set it up again after samtune's configs were composed (or a test cleared it)."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    if not GlobalHydra.instance().is_initialized():
        initialize_config_module("sam2", version_base="1.2")


def measure(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """The fastest of ``--reps`` calls of each predictor, interleaved, on one file of random
    weights at ``--predictor-image-size``."""
    from sam2.build_sam import build_sam2

    name, size = args.eval_size, args.predictor_image_size
    _, samples = load_samples(compose_config("eval", data_overrides(args.data, 2)), 2)
    samples = [s for s in samples if s.masks.shape[0] > 0]
    image = samples[0].image
    point = np.array([[image.shape[1] / 2, image.shape[0] / 2]])
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / f"{name}.pt"
        torch.manual_seed(0)
        torch.save({"model": build_model(name, size).state_dict()}, ckpt)
        overrides = [] if size == 1024 else [f"++model.image_size={size}"]
        sam2_hydra()
        official = official_predictor(
            build_sam2(
                get_model_info(name).sam2_config,
                str(ckpt),
                device=str(device),
                hydra_overrides_extra=overrides,
            )
        )
        ours = samtune.load_predictor(str(ckpt), device=str(device), image_size=size)

    def once(predictor: Any) -> None:
        with torch.inference_mode(), autocast(device, args.eval_precision):
            predictor.set_image(image)
            predictor.predict(point_coords=point, point_labels=np.array([1]), multimask_output=True)

    results: dict[str, list[float]] = {}
    for predictor in (official, ours):
        once(predictor)  # warm-up
    for _ in range(args.reps):  # interleaved, so that drifting load hits both alike
        for label, predictor in (("official", official), ("samtune", ours)):
            results.setdefault(label, []).extend(timed(lambda p=predictor: once(p), device, 1))
    row = {
        "model": name,
        "image_size": size,
        "official_s": min(results["official"]),
        "samtune_s": min(results["samtune"]),
    }
    row["overhead"] = row["samtune_s"] / row["official_s"] - 1.0
    print(
        f"  predictor: official {row['official_s']:.3f} s, samtune {row['samtune_s']:.3f} s",
        flush=True,
    )
    return row


def tables(row: dict[str, Any]) -> list[str]:
    """The predictor table."""
    return table(
        ["predictor (set_image + predict)", "px", "official s", "samtune s", "overhead"],
        [
            [
                row["model"],
                str(row["image_size"]),
                f"{row['official_s']:.3f}",
                f"{row['samtune_s']:.3f}",
                f"{row['overhead']:+.1%}",
            ]
        ],
    )
