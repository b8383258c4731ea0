"""Section ``train``: one training step per configuration, its time, peak memory and FLOPs."""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import torch

from samtune.segmenter.flops import FlopCounter
from samtune.training.memory import estimate_step_memory
from samtune.training.memory_check import module_inputs
from scripts.bench.common import fmt, peak_rss_bytes, table, timed
from scripts.bench.rig import TrainRig, run_job, train_job


def measure_job(job: dict[str, Any]) -> dict[str, Any]:
    """Run one training configuration and measure it (meant for a fresh process)."""
    rig = TrainRig(job)
    module, device, step = rig.module, rig.device, rig.step
    if job["config"] == "frozen_cache_hit":
        step(999)  # fills the cache; not measured
    with FlopCounter() as counter:  # step 0: warm-up and FLOP count
        step(1000)
    times = []
    for i in range(job["steps"]):
        times.extend(timed(lambda i=i: step(1001 + i), device, 1))
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        memory_kind = "max_memory_allocated"
    else:
        peak = peak_rss_bytes() - rig.base_rss
        memory_kind = "peak RSS - RSS before building"
        if not job.get("isolated", False):
            memory_kind += " (in-process: includes earlier configurations, not comparable)"
    objects = rig.objects[-1]
    out = {
        **{k: job[k] for k in ("config", "size", "image_size", "batch", "precision")},
        "sec_per_step": min(times),
        "sec_per_step_median": statistics.median(times),
        "sec_encode": min(rig.encode_times[-len(times) :]),  # the encoder part of a timed step
        "step_times": times,
        "peak_memory_mb": peak / 2**20,
        "memory_kind": memory_kind,
        "flops_per_step": counter.total,
        "objects_per_step": objects,
        "trainable_params": module.param_report["trainable"],
    }
    out.update(memory_estimate(module, job, objects))
    if module.embedding_cache is not None:
        stats = module.embedding_cache.stats
        out["cache"] = {
            "hits": stats.hits,
            "misses": stats.misses,
            "mb": stats.memory_bytes / 2**20,
        }
    return out


def memory_estimate(module: Any, job: dict[str, Any], objects: int) -> dict[str, Any]:
    """samtune's estimate of the step's peak memory (``samtune.training.memory``, what training
    checks before it starts) for the objects this step prompted."""
    inputs = module_inputs(
        module,
        batch=job["batch"],
        objects_per_image=max(objects, 1) / job["batch"],
        bf16=job["precision"] == "bf16",
    )
    return {
        "estimated_memory_mb": estimate_step_memory(inputs).total / 2**20,
        "prompt_steps": inputs.prompt_steps,
    }


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Speed-ups vs ``frozen_recomputed`` and ``full`` (measured and FLOP-predicted), memory vs full."""
    for size in {r["size"] for r in rows}:
        by = {r["config"]: r for r in rows if r["size"] == size}
        for r in by.values():
            for ref_name, tag in (("frozen_recomputed", "vs_frozen"), ("full", "vs_full")):
                ref = by.get(ref_name)
                if ref is None:
                    continue
                r[f"speedup_{tag}"] = ref["sec_per_step"] / r["sec_per_step"]
                r[f"flop_speedup_{tag}"] = ref["flops_per_step"] / max(1, r["flops_per_step"])
            if "full" in by:
                r["memory_vs_full"] = r["peak_memory_mb"] / by["full"]["peak_memory_mb"]
        hit = by.get("frozen_cache_hit")
        if hit is not None and "speedup_vs_frozen" in hit:
            hit["fraction_of_flop_speedup"] = (
                hit["speedup_vs_frozen"] / hit["flop_speedup_vs_frozen"]
            )


def measure(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """Every ``--train-configs`` entry for every ``--train-sizes`` entry."""
    rows = []
    for size in args.train_sizes:
        for config in args.train_configs:
            job = train_job(args, device, config, size, args.steps)
            row = run_job(job, args.isolate, measure_job)
            rows.append(row)
            print(
                f"  train {size} {config}: {row['sec_per_step']:.2f} s/step, "
                f"{row['peak_memory_mb']:.0f} MB (estimated {row['estimated_memory_mb']:.0f} MB)",
                flush=True,
            )
    add_ratios(rows)
    return rows


def tables(rows: list[dict[str, Any]]) -> list[str]:
    """The memory table (measured vs estimated), the step table and the cache-hit line."""
    lines = []
    if any("estimated_memory_mb" in r for r in rows):
        lines += [
            "Training step memory: samtune's estimate (samtune.training.memory) vs measured",
            "",
        ]
        lines += table(
            ["model", "config", "px", "batch", "objects x steps", "precision"]
            + ["measured MB", "estimated MB", "error"],
            [
                [
                    r["size"],
                    r["config"],
                    str(r["image_size"]),
                    str(r["batch"]),
                    f"{r['objects_per_step']} x {r.get('prompt_steps', '?')}",
                    r["precision"],
                    f"{r['peak_memory_mb']:.0f}",
                    f"{r['estimated_memory_mb']:.0f}",
                    f"{r['estimated_memory_mb'] / r['peak_memory_mb'] - 1:+.0%}",
                ]
                for r in rows
                if "estimated_memory_mb" in r
            ],
        )
    lines += table(
        [
            "model",
            "config",
            "s/step",
            "vs frozen recomputed (FLOPs predict)",
            "vs full (FLOPs predict)",
            "peak MB",
            "memory vs full",
            "GFLOP/step",
        ],
        [
            [
                r["size"],
                r["config"],
                f"{r['sec_per_step']:.2f}",
                f"{fmt(r.get('speedup_vs_frozen'))}x ({fmt(r.get('flop_speedup_vs_frozen'))}x)",
                f"{fmt(r.get('speedup_vs_full'))}x ({fmt(r.get('flop_speedup_vs_full'))}x)",
                f"{r['peak_memory_mb']:.0f}",
                fmt(r.get("memory_vs_full")),
                f"{r['flops_per_step'] / 1e9:.1f}",
            ]
            for r in rows
        ],
    )
    return lines + [
        f"{r['size']}: cache hit reaches {r['fraction_of_flop_speedup']:.0%} of the speed-up "
        f"FLOPs predict ({r['speedup_vs_frozen']:.2f}x of {r['flop_speedup_vs_frozen']:.2f}x)\n"
        for r in rows
        if "fraction_of_flop_speedup" in r
    ]
