"""Section ``encoder``: image-encoder images/s and achieved GFLOP/s per model size and precision."""

from __future__ import annotations

import argparse
import gc
from typing import Any

import torch

from samtune.segmenter.flops import FlopCounter, gpu_peak_bf16_tflops
from samtune.segmenter.sam2 import encode
from scripts.bench.common import autocast, fmt, table, timed
from scripts.bench.compose import build_model


def measure(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """One row per ``--encoder-sizes`` x ``--precisions`` entry; the fraction of the GPU's dense
    bf16 peak where it is known (``--gpu-peak-tflops`` or ``samtune.segmenter.flops``)."""
    peak = None
    if device.type == "cuda":
        peak = gpu_peak_bf16_tflops(torch.cuda.get_device_name(device))
    peak = args.gpu_peak_tflops or peak
    size, batch = args.encoder_image_size, args.encoder_batch
    rows = []
    for name in args.encoder_sizes:
        model = build_model(name, size).to(device).eval()
        if args.compile:
            model.image_encoder.compile(dynamic=False)
        x = torch.randn(batch, 3, size, size, device=device)
        flops = None
        for precision in args.precisions:
            with torch.no_grad(), autocast(device, precision):
                if flops is None:
                    with FlopCounter() as counter:
                        encode(model, x)
                    flops = counter.total / batch
                else:
                    encode(model, x)  # warm-up
                times = timed(lambda m=model, x=x: encode(m, x), device, args.reps)
            sec = min(times) / batch
            row = {
                "model": name,
                "image_size": size,
                "precision": precision,
                "batch": batch,
                "sec_per_image": sec,
                "images_per_s": 1.0 / sec,
                "gflop_per_image": flops / 1e9,
                "achieved_gflops": flops / sec / 1e9,
            }
            if peak and precision == "bf16":
                row["fraction_of_peak"] = flops / sec / (peak * 1e12)
            rows.append(row)
            print(
                f"  encoder {name} {precision}: {row['images_per_s']:.2f} img/s, "
                f"{row['achieved_gflops']:.1f} GFLOP/s",
                flush=True,
            )
        del model
        gc.collect()
    return rows


def tables(rows: list[dict[str, Any]]) -> list[str]:
    """The encoder table."""
    return table(
        ["encoder", "px", "precision", "images/s", "GFLOP/image", "achieved GFLOP/s", "of peak"],
        [
            [
                r["model"],
                str(r["image_size"]),
                r["precision"],
                f"{r['images_per_s']:.2f}",
                f"{r['gflop_per_image']:.1f}",
                f"{r['achieved_gflops']:.1f}",
                fmt(r.get("fraction_of_peak"), ".1%"),
            ]
            for r in rows
        ],
    )
