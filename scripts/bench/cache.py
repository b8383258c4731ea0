"""Section ``cache``: adapter=frozen, cache-hit and recomputed steps alternating in one process."""

from __future__ import annotations

import argparse
from typing import Any

import torch

from samtune.segmenter.flops import FlopCounter
from scripts.bench.common import table, timed
from scripts.bench.rig import TrainRig, run_job, train_job

JOB = "frozen_interleaved"


def measure_job(job: dict[str, Any]) -> dict[str, Any]:
    """Alternating cache-hit and recomputed steps of one module: the fairest speed comparison on a
    machine whose load drifts (same model, prompts and allocator state)."""
    rig = TrainRig(job)
    cache = rig.module.embedding_cache
    with FlopCounter() as recomputed_flops:  # a miss: the encoder runs (and fills the cache)
        rig.step(1000)
    with FlopCounter() as hit_flops:
        rig.step(1000)
    times: dict[str, list[float]] = {"hit": [], "recomputed": []}
    for i in range(job["steps"]):
        for mode in ("recomputed", "hit"):
            rig.module.embedding_cache = cache if mode == "hit" else None
            times[mode].extend(timed(lambda i=i: rig.step(1001 + i), rig.device, 1))
    out = {
        **{k: job[k] for k in ("size", "image_size", "batch", "precision")},
        "steps_each": job["steps"],
        "sec_hit": min(times["hit"]),
        "sec_recomputed": min(times["recomputed"]),
        "times": times,
        "flops_hit": hit_flops.total,
        "flops_recomputed": recomputed_flops.total,
    }
    out["speedup"] = out["sec_recomputed"] / out["sec_hit"]
    out["flop_speedup"] = out["flops_recomputed"] / max(1, out["flops_hit"])
    out["fraction_of_flop_speedup"] = out["speedup"] / out["flop_speedup"]
    return out


def measure(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """One alternating run per ``--train-sizes`` entry, ``--pairs`` hit/recomputed pairs each."""
    rows = []
    for size in args.train_sizes:
        row = run_job(train_job(args, device, JOB, size, args.pairs), args.isolate, measure_job)
        rows.append(row)
        print(
            f"  cache {size}: hit {row['sec_hit']:.2f} s, recomputed {row['sec_recomputed']:.2f} s "
            f"({row['speedup']:.2f}x; FLOPs predict {row['flop_speedup']:.2f}x)",
            flush=True,
        )
    return rows


def tables(rows: list[dict[str, Any]]) -> list[str]:
    """The alternating-steps table."""
    return table(
        [
            "frozen, alternating steps",
            "px",
            "batch",
            "hit s/step",
            "recomputed s/step",
            "speed-up",
            "FLOPs predict",
            "fraction",
        ],
        [
            [
                r["size"],
                str(r["image_size"]),
                str(r["batch"]),
                f"{r['sec_hit']:.2f}",
                f"{r['sec_recomputed']:.2f}",
                f"{r['speedup']:.2f}x",
                f"{r['flop_speedup']:.2f}x",
                f"{r['fraction_of_flop_speedup']:.0%}",
            ]
            for r in rows
        ],
    )
