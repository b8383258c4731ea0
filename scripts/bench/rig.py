"""One training configuration ready to step (module, optimiser, batch), in this process or another.

The ``train`` and ``cache`` sections describe a configuration as a JSON-able job dict; with
``--isolate`` each job runs in a fresh process (``python -m scripts.bench --train-job JOB``), so
that its peak memory is its own.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from samtune.prompts.streams import PromptStreams
from samtune.training.optim import param_groups
from scripts.bench.common import REPO, autocast, rss_bytes, sync
from scripts.bench.compose import build_train_module, data_overrides, load_samples, training_batch


def train_job(args: Any, device: torch.device, config: str, size: str, steps: int) -> dict:
    """The job of one training configuration from the command-line options."""
    return {
        "config": config,
        "size": size,
        "image_size": args.image_size,
        "batch": args.batch,
        "steps": steps,
        "device": str(device),
        "precision": args.train_precision,
        "threads": torch.get_num_threads(),
        "data": str(args.data) if args.data else "",
        "prompts": args.prompt_overrides,
    }


class TrainRig:
    """One configuration's module (composed from the shipped configs), optimiser, batch and step.

    Args:
        job: see :func:`train_job`; ``"frozen_interleaved"`` builds ``frozen_cache_hit``.
    """

    def __init__(self, job: dict[str, Any]) -> None:
        torch.set_num_threads(job["threads"])
        self.device = device = torch.device(job["device"])
        if device.type == "cuda":
            torch.set_float32_matmul_precision("high")
            torch.cuda.reset_peak_memory_stats(device)
        self.base_rss = rss_bytes()
        self.job = job
        config = "frozen_cache_hit" if job["config"] == "frozen_interleaved" else job["config"]
        data = Path(job["data"]) if job["data"] else None
        cfg, self.module = build_train_module(
            config,
            job["size"],
            job["image_size"],
            job["prompts"],
            extra=data_overrides(data, job["batch"]),
        )
        datamodule, samples = load_samples(cfg, job["batch"])
        images, masks = training_batch(datamodule, samples)
        self.images, self.masks = images.to(device), [m.to(device) for m in masks]
        self.module.to(device).train()
        optim = self.module.optim_cfg
        groups = param_groups(
            self.module.model,
            lr=optim.lr,
            encoder_lr_scale=float(getattr(self.module.adapter, "encoder_lr_scale", 1.0)),
            weight_decay=optim.weight_decay,
        )
        self.optimizer = torch.optim.AdamW(groups, betas=tuple(optim.betas))
        self.objects: list[int] = []
        self.encode_times: list[float] = []

    def step(self, seed: int) -> None:
        """One training step whose prompts are drawn from ``seed``."""
        module, device = self.module, self.device
        streams = PromptStreams(torch.Generator().manual_seed(seed))
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(device, self.job["precision"]):
            gt, img_idx = module.gather_objects(self.masks, streams)
            if gt is None:
                raise ValueError("the benchmark batch holds no object: nothing to prompt")
            sync(device)
            t0 = time.perf_counter()
            features = module.encode_images(self.images)
            sync(device)
            self.encode_times.append(time.perf_counter() - t0)
            terms = module.interactive_loss(features, gt, img_idx, streams)
        terms["loss"].backward()
        self.optimizer.step()
        self.objects.append(int(gt.shape[0]))


def run_job(
    job: dict[str, Any], isolate: bool, measure: Callable[[dict[str, Any]], dict[str, Any]]
) -> dict[str, Any]:
    """``measure(job)`` in a fresh Python process (``isolate``) or in this one.

    Raises:
        RuntimeError: the child process failed, with the end of its error output.
    """
    job = {**job, "isolated": isolate}
    if not isolate:
        result = measure(job)
        gc.collect()
        return result
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.bench", "--train-job", json.dumps(job)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"training benchmark {job['config']} ({job['size']}) failed:\n{proc.stderr[-4000:]}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])
