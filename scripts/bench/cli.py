"""The benchmark's command line: options, running the chosen sections, tables and JSON."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

import scripts.bench as package
from samtune.data.datasets.demo import NUCLEI_MINI
from samtune.io_atomic import write_text_atomic
from samtune.training.run import cpu_has_native_bf16
from scripts.bench import cache, clips, encoder, evaluation, predictor, train
from scripts.bench.common import SECTIONS, SIZES, TRAIN_CONFIGS, device_name, pick_device

SECTION_MODULES = {
    "encoder": encoder,
    "train": train,
    "cache": cache,
    "eval": evaluation,
    "predictor": predictor,
    "clips": clips,
}
JOB_MEASURES = {
    cache.JOB: cache.measure_job,
    clips.CLIP_JOB: clips.measure_job,
    clips.IMAGE_JOB: clips.measure_job,
}  # every other job is a train configuration
QUICK_PROMPTS = {"correction_clicks": 1, "max_objects_per_image": 2}

log = logging.getLogger("samtune.benchmark")


def data_folder(value: str) -> Path | None:
    """``--data``: a folder of ``images/`` and ``masks/``, or ``none`` for synthetic images."""
    return None if value.lower() == "none" else Path(value)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--quick`` overrides sizes, resolutions and repetitions."""
    p = argparse.ArgumentParser(
        prog="python -m scripts.bench",
        description=(package.__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 128 px, tiny only, 1 repetition, in-process",
    )
    p.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads")
    p.add_argument(
        "--data",
        type=data_folder,
        default=NUCLEI_MINI,
        help="folder of images/ and masks/ (default: the bundled nuclei-mini); "
        "none: samtune's synthetic ellipses",
    )
    p.add_argument("--reps", type=int, default=3, help="timed repetitions (encoder, predictor)")
    p.add_argument(
        "--precisions",
        nargs="+",
        default=["fp32", "bf16"],
        choices=["fp32", "bf16"],
        help="encoder section",
    )
    p.add_argument("--encoder-sizes", nargs="+", default=list(SIZES), choices=SIZES)
    p.add_argument("--encoder-image-size", type=int, default=256)
    p.add_argument("--encoder-batch", type=int, default=1)
    p.add_argument(
        "--compile", action="store_true", help="torch.compile the encoder (static shapes)"
    )
    p.add_argument("--train-sizes", nargs="+", default=list(SIZES[:2]), choices=SIZES)
    p.add_argument("--train-configs", nargs="+", default=list(TRAIN_CONFIGS), choices=TRAIN_CONFIGS)
    p.add_argument("--image-size", type=int, default=256, help="training resolution")
    p.add_argument("--batch", type=int, default=4, help="training images per step")
    p.add_argument("--steps", type=int, default=1, help="timed training steps (after one warm-up)")
    p.add_argument(
        "--pairs", type=int, default=2, help="cache section: hit/recomputed step pairs, alternating"
    )
    p.add_argument(
        "--train-precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="auto: bf16 on a GPU or a CPU with native bf16",
    )
    p.add_argument(
        "--isolate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="one process per training configuration (default: on, off with --quick)",
    )
    p.add_argument(
        "--eval-size",
        default=SIZES[0],
        choices=SIZES,
        help="model of the eval and predictor sections",
    )
    p.add_argument("--eval-image-size", type=int, default=1024)
    p.add_argument("--eval-images", type=int, default=4)
    p.add_argument(
        "--eval-max-objects", type=int, default=None, help="objects per image (None: all)"
    )
    p.add_argument(
        "--eval-batch",
        default="auto",
        help="images the evaluator encodes together (auto: the evaluator's default for the device)",
    )
    p.add_argument("--eval-precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--predictor-image-size", type=int, default=1024)
    p.add_argument(
        "--gpu-peak-tflops",
        type=float,
        default=None,
        help="dense bf16 peak, when the GPU is not in samtune.segmenter.flops",
    )
    p.add_argument(
        "--prompts",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="prompt recipe overrides of the train and cache sections, as in configs/prompts "
        "(e.g. max_objects_per_image=4 correction_clicks=2)",
    )
    p.add_argument(
        "--clip-size", default=SIZES[0], choices=SIZES, help="model of the clips section"
    )
    p.add_argument("--clip-image-size", type=int, default=256, help="clips section resolution")
    p.add_argument("--clip-frames", type=int, default=8, help="frames per clip (T)")
    p.add_argument("--clip-objects", type=int, default=3, help="objects per clip (N)")
    p.add_argument("--clip-videos", type=int, default=2, help="clips evaluated")
    p.add_argument("--clip-reps", type=int, default=2, help="timed repetitions (clips section)")
    p.add_argument(
        "--clip-configs",
        nargs="+",
        default=["lora"],
        choices=clips.CLIP_CONFIGS,
        help="adapter configurations of the clip-step comparison",
    )
    p.add_argument(
        "--clip-image-steps",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="clips section: also time the T image steps (off: the clip step and its memory only)",
    )
    p.add_argument(
        "--clip-eval",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="clips section: also compare clip evaluation with the plain SAM2VideoPredictor loop",
    )
    p.add_argument("--json", default="benchmark.json", help="where to write the JSON ('-': stdout)")
    p.add_argument("--train-job", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.prompt_overrides = {}
    for item in args.prompts:
        key, sep, value = item.partition("=")
        if not sep or not key:
            p.error(f"--prompts takes KEY=VALUE items, got {item!r}")
        args.prompt_overrides[key] = yaml.safe_load(value)
    if args.quick:
        args.encoder_sizes, args.train_sizes = [SIZES[0]], [SIZES[0]]
        args.encoder_image_size = args.image_size = args.eval_image_size = 128
        args.predictor_image_size = 128
        args.batch, args.steps, args.reps, args.eval_images, args.eval_max_objects = 1, 1, 1, 1, 6
        args.pairs = 1
        args.clip_image_size, args.clip_frames, args.clip_objects = 64, 3, 2
        args.clip_videos, args.clip_reps = 1, 1
        args.prompt_overrides = dict(QUICK_PROMPTS)
    if args.isolate is None:
        args.isolate = not args.quick
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the chosen sections; a section that fails is recorded with its error, not fatal
    (except with ``--quick``, the tests' run)."""
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    native = device.type == "cuda" or cpu_has_native_bf16()
    for attr in ("train_precision", "eval_precision"):
        if getattr(args, attr) == "auto":
            setattr(args, attr, "bf16" if native else "fp32")
    result: dict[str, Any] = {
        "device": device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "command": " ".join(sys.argv),
        "quick": bool(args.quick),
        "weights": "random init (timings do not depend on the values)",
        "prompt_recipe": {
            "config": "configs/prompts/default.yaml",
            "overrides": args.prompt_overrides,
        },
        "settings": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k != "train_job"
        },
    }
    for name in args.sections:
        print(f"[{name}]", flush=True)
        t0 = time.perf_counter()
        try:
            result[name] = SECTION_MODULES[name].measure(args, device)
        except Exception as exc:  # keep the other sections' numbers
            if args.quick:
                raise
            result[name] = {"error": f"{type(exc).__name__}: {exc}"}
            log.exception("benchmark section %s failed", name)
        result.setdefault("section_seconds", {})[name] = round(time.perf_counter() - t0, 1)
        if args.json != "-":  # what is measured so far survives a later failure
            write_text_atomic(args.json, json.dumps(result, indent=1, default=str))
    return result


def format_tables(result: dict[str, Any]) -> str:
    """Markdown tables of a benchmark result, one or more per measured section."""
    lines = [
        f"device: {result['device']}; torch {result['torch']}; threads {result['threads']}",
        "",
    ]
    for name in SECTIONS:
        value = result.get(name)
        if isinstance(value, dict) and "error" in value:
            continue
        if value:
            lines += SECTION_MODULES[name].tables(value)
    for name in SECTIONS:
        if isinstance(result.get(name), dict) and "error" in result[name]:
            lines.append(f"{name}: not measured ({result[name]['error']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Console entry point; returns the result dict (for tests).

    With ``--train-job JOB`` (the child process of an isolated run) it measures that one job
    and prints its row as the last line of JSON.
    """
    args = parse_args(argv)
    if args.train_job:
        job = json.loads(args.train_job)
        print(json.dumps(JOB_MEASURES.get(job["config"], train.measure_job)(job)))
        return {}
    logging.basicConfig(level=logging.WARNING)
    result = run(args)
    print()
    print(format_tables(result))
    text = json.dumps(result, indent=1, default=str)
    if args.json == "-":
        print(text)
    else:
        write_text_atomic(args.json, text)
        print(f"\nJSON: {Path(args.json).resolve()}")
    return result
