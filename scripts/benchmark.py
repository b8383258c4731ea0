"""samtune's speed and memory, side by side in one run: prints a table and writes JSON.

Sections (``--sections``):

- ``encoder``: image-encoder images/s and achieved GFLOP/s per model size, fp32 vs bf16 autocast.
- ``train``: one training step (the default prompt recipe, ``configs/prompts/default.yaml``) for
  frozen + cache hit, frozen recomputed, LoRA, LoRA + checkpointing of the Hiera blocks, LoRA +
  checkpointing of the Hiera blocks and of each prompt step, and full fine-tuning: seconds/step,
  peak memory, FLOPs/step; ratios to "frozen recomputed" and "full",
  measured next to what the FLOPs predict. Each configuration runs in its own process so that
  its peak memory is its own (RSS on the CPU, ``max_memory_allocated`` on a GPU).
- ``cache``: adapter=frozen, cache-hit and recomputed steps alternating in one process (same
  model, prompts and load), the speed-up measured next to the one FLOPs predict.
- ``eval``: objects/s of samtune's ``Evaluator`` (``point1``) vs a loop over the official
  ``SAM2ImagePredictor`` (``set_image`` once per image, ``predict`` once per object), same
  weights, images and clicks.
- ``predictor``: latency of ``set_image`` + ``predict`` for ``samtune.load_predictor`` vs the
  official predictor built by ``sam2.build_sam.build_sam2``.

Weights are random (timings do not depend on them); images come from nuclei-mini. Every time is
the fastest of its repetitions (the least disturbed by other work on a shared machine). Runs on the
GPU when there is one (``--device``), else the CPU. ``--quick`` is the seconds-long smoke run the
tests use. The exact command behind docs/performance.md is given there.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

import samtune  # noqa: E402
from samtune.data.datasets.synthetic import SyntheticDataset  # noqa: E402
from samtune.data.sample import Sample  # noqa: E402
from samtune.evaluation import Evaluator, center_points  # noqa: E402
from samtune.evaluation.report.render import Table, to_markdown  # noqa: E402
from samtune.inference.predict import load_predictor  # noqa: E402
from samtune.io_atomic import write_text_atomic  # noqa: E402
from samtune.models import ModelSpec, build_sam2_model, get_model_info  # noqa: E402
from samtune.segmenter.cache import EmbeddingCache  # noqa: E402
from samtune.segmenter.flops import FlopCounter, gpu_peak_bf16_tflops  # noqa: E402
from samtune.segmenter.sam2 import encode, feature_sizes, preprocess_like_predictor  # noqa: E402
from samtune.training.module import SamTuneModule  # noqa: E402
from samtune.training.optim import OptimConfig, param_groups  # noqa: E402
from samtune.training.run import cpu_has_native_bf16  # noqa: E402

SIZES = ("sam2.1_hiera_tiny", "sam2.1_hiera_small", "sam2.1_hiera_base_plus", "sam2.1_hiera_large")
TRAIN_CONFIGS = (
    "frozen_cache_hit",
    "frozen_recomputed",
    "lora",
    "lora_checkpointing",  # Hiera blocks checkpointed
    "lora_checkpointing_all",  # Hiera blocks and prompt steps (decoder + loss) checkpointed
    "full",
)
SECTIONS = ("encoder", "train", "cache", "eval", "predictor")
DEFAULT_DATA = REPO.parent / "shared" / "data" / "nuclei-mini"
QUICK_PROMPTS = {"correction_clicks": 1, "max_objects_per_image": 2}

log = logging.getLogger("samtune.benchmark")


# ---------------------------------------------------------------------------- measuring
def pick_device(name: str) -> torch.device:
    """``auto``: the GPU when there is one, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: no CUDA device is available")
    device = torch.device(name)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 matmuls on Ampere and later
        torch.backends.cudnn.allow_tf32 = True
    return device


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that wall-clock times are the work's."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, precision: str):
    """bf16 autocast for ``precision == "bf16"``, else nothing."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _proc_status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_bytes() -> int:
    """Resident memory of this process now (0 where /proc is missing)."""
    kib = _proc_status_kib("VmRSS")
    return 1024 * kib if kib is not None else 0


def peak_rss_bytes() -> int:
    """Highest resident memory of this process so far."""
    kib = _proc_status_kib("VmHWM")
    if kib is not None:
        return 1024 * kib
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if platform.system() == "Darwin" else peak * 1024


def timed(fn, device: torch.device, reps: int) -> list[float]:
    """Seconds of each of ``reps`` calls of ``fn``."""
    out = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t0)
    return out


# ---------------------------------------------------------------------------- data
def load_samples(data: Path | None, limit: int, *, seed: int = 0) -> list:
    """Up to ``limit`` nuclei-mini images as ``Sample`` (original resolution), or synthetic blobs."""

    samples = []
    if data is not None and (data / "images").is_dir():
        from PIL import Image

        for path in sorted((data / "images").glob("*.png"))[:limit]:
            image = np.asarray(Image.open(path).convert("RGB"))
            labels = np.asarray(Image.open(data / "masks" / path.name))
            ids = [i for i in np.unique(labels) if i != 0]
            masks = (
                np.stack([labels == i for i in ids]) if ids else np.zeros((0, *labels.shape), bool)
            )
            samples.append(
                Sample(image=image, masks=masks, meta={"file": str(path), "image_id": path.stem})
            )
        if samples:
            return samples
    # no data: samtune's synthetic data, 12 bright ellipses of 8-22 px radius per image
    synthetic = SyntheticDataset(
        num_images=limit, size=(256, 320), objects=(12, 12), radius=(0.03, 0.07), seed=seed
    )
    samples = [synthetic.load(i) for i in range(limit)]
    return samples


def training_batch(samples: list, image_size: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Normalised ``B x 3 x S x S`` images and their ``N_i x S x S`` masks, resized like training."""

    images = preprocess_like_predictor([s.image for s in samples], image_size)
    masks = []
    for s in samples:
        m = torch.from_numpy(s.masks)[:, None].float()
        m = (
            torch.nn.functional.interpolate(m, size=(image_size, image_size), mode="nearest")[:, 0]
            > 0
        )
        masks.append(m[m.flatten(1).any(1)])
    return images, masks


# ---------------------------------------------------------------------------- encoder
def bench_encoder(args, device: torch.device) -> list[dict[str, Any]]:
    """Images/s and achieved GFLOP/s of the image encoder per size and precision."""

    peak = (
        gpu_peak_bf16_tflops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    )
    peak = args.gpu_peak_tflops or peak
    rows = []
    for name in args.encoder_sizes:
        model = build_sam2_model(name, image_size=args.encoder_image_size).to(device)
        if args.compile:
            model.image_encoder.compile(dynamic=False)
        x = torch.randn(
            args.encoder_batch, 3, args.encoder_image_size, args.encoder_image_size, device=device
        )
        flops = None
        for precision in args.precisions:
            with torch.no_grad(), autocast(device, precision):
                if flops is None:
                    with FlopCounter() as counter:
                        encode(model, x)
                    flops = counter.total / args.encoder_batch
                else:
                    encode(model, x)  # warm-up
                times = timed(lambda m=model, x=x: encode(m, x), device, args.reps)
            sec = min(times) / args.encoder_batch
            row = {
                "model": name,
                "image_size": args.encoder_image_size,
                "precision": precision,
                "batch": args.encoder_batch,
                "sec_per_image": sec,
                "images_per_s": 1.0 / sec,
                "gflop_per_image": flops / 1e9,
                "achieved_gflops": flops / sec / 1e9,
            }
            if peak and precision == "bf16":
                row["fraction_of_peak"] = flops / sec / (peak * 1e12)
            rows.append(row)
            print(
                f"  encoder {name} {precision}: {row['images_per_s']:.2f} img/s, {row['achieved_gflops']:.1f} GFLOP/s",
                flush=True,
            )
        del model
        gc.collect()
    return rows


# ---------------------------------------------------------------------------- training
def _config_yaml(group: str, name: str):
    from omegaconf import OmegaConf

    return OmegaConf.load(REPO / "configs" / group / f"{name}.yaml")


_BUILT: dict[tuple[str, int], torch.nn.Module] = {}


def _model_spec(size: str, image_size: int, share: bool):
    """A random-init ModelSpec; with ``share``, every build copies one model built once (in-process
    runs: the configurations then skip rebuilding the same architecture)."""
    import copy

    class SharedSpec(ModelSpec):
        def build(self) -> torch.nn.Module:
            key = (self.name, int(self.image_size))
            if key not in _BUILT:
                _BUILT[key] = super().build()
            return copy.deepcopy(_BUILT[key])

    return (SharedSpec if share else ModelSpec)(size, image_size=image_size, checkpoint=None)


def build_train_module(
    config: str, size: str, image_size: int, prompt_overrides: dict, *, share_model: bool = False
):
    """The SamTuneModule for one benchmark configuration, from the project's default configs."""
    from hydra.utils import instantiate

    adapter_name = {"frozen_cache_hit": "frozen", "frozen_recomputed": "frozen"}.get(
        config, config.split("_")[0]
    )
    prompts_cfg = _config_yaml("prompts", "default")
    for k, v in prompt_overrides.items():
        prompts_cfg[k] = v
    logging.getLogger("samtune.models.spec").setLevel(logging.ERROR)  # random weights, on purpose
    return SamTuneModule(
        model=_model_spec(size, image_size, share_model),
        adapter=instantiate(_config_yaml("adapter", adapter_name)),
        prompts=instantiate(prompts_cfg),
        loss=instantiate(_config_yaml("loss", "default")),
        optim=OptimConfig(),
        embedding_cache=EmbeddingCache() if config == "frozen_cache_hit" else None,
        activation_checkpointing=config.startswith("lora_checkpointing"),
        checkpoint_prompt_steps=config == "lora_checkpointing_all",
    )


class _TrainRig:
    """One configuration's module, optimiser, batch and step function."""

    def __init__(self, job: dict[str, Any]) -> None:
        torch.set_num_threads(job["threads"])
        self.device = device = torch.device(job["device"])
        if device.type == "cuda":
            torch.set_float32_matmul_precision("high")
            torch.cuda.reset_peak_memory_stats(device)
        self.base_rss = rss_bytes()
        self.job = job
        samples = load_samples(Path(job["data"]) if job["data"] else None, job["batch"])
        images, masks = training_batch(samples, job["image_size"])
        self.images, self.masks = images.to(device), [m.to(device) for m in masks]
        config = "frozen_cache_hit" if job["config"] == "frozen_interleaved" else job["config"]
        self.module = build_train_module(
            config,
            job["size"],
            job["image_size"],
            job["prompts"],
            share_model=not job.get("isolated", False),
        )
        self.module.to(device).train()
        groups = param_groups(
            self.module.model,
            lr=1e-4,
            encoder_lr_scale=self.module.adapter.encoder_lr_scale,
            weight_decay=0.01,
        )
        self.optimizer = torch.optim.AdamW(groups)
        self.objects: list[int] = []
        self.encode_times: list[float] = []

    def step(self, seed: int) -> None:
        """One training step whose prompts are drawn from ``seed``."""
        module, device = self.module, self.device
        generator = torch.Generator().manual_seed(seed)
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(device, self.job["precision"]):
            gt, img_idx = module._gather_objects(self.masks, generator)
            sync(device)
            t0 = time.perf_counter()
            features = module.encode_images(self.images)
            sync(device)
            self.encode_times.append(time.perf_counter() - t0)
            terms = module.interactive_loss(features, gt, img_idx, generator)
        terms["loss"].backward()
        self.optimizer.step()
        self.objects.append(int(gt.shape[0]))


def interleaved_job(job: dict[str, Any]) -> dict[str, Any]:
    """adapter=frozen, alternating cache-hit and recomputed steps in one process: the fairest
    speed comparison on a machine whose load drifts (same model, prompts and allocator state)."""

    rig = _TrainRig(job)
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


def train_job(job: dict[str, Any]) -> dict[str, Any]:
    """Run one training configuration and measure it (meant for a fresh process)."""

    if job["config"] == "frozen_interleaved":
        return interleaved_job(job)
    rig = _TrainRig(job)
    module, device, step = rig.module, rig.device, rig.step
    objects, encode_times, base_rss = rig.objects, rig.encode_times, rig.base_rss

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
        peak = peak_rss_bytes() - base_rss
        memory_kind = "peak RSS - RSS before building"
        if not job.get("isolated", False):
            memory_kind += " (in-process: includes earlier configurations, not comparable)"
    report = module.param_report
    out = {
        **{k: job[k] for k in ("config", "size", "image_size", "batch", "precision")},
        "sec_per_step": min(times),
        "sec_per_step_median": statistics.median(times),
        "sec_encode": min(encode_times[-len(times) :]),  # the image-encoder part of a timed step
        "step_times": times,
        "peak_memory_mb": peak / 2**20,
        "memory_kind": memory_kind,
        "flops_per_step": counter.total,
        "objects_per_step": objects[-1],
        "trainable_params": report["trainable"],
    }
    out.update(memory_estimate(module, job, objects[-1]))
    if module.embedding_cache is not None:
        stats = module.embedding_cache.stats
        out["cache"] = {
            "hits": stats.hits,
            "misses": stats.misses,
            "mb": stats.memory_bytes / 2**20,
        }
    return out


def memory_estimate(module, job: dict[str, Any], objects: int) -> dict[str, Any]:
    """samtune's estimate of the step's peak memory (``samtune.training.memory``, what training checks
    before it starts), for the objects this step prompted, next to what was measured."""
    from samtune.training.memory import estimate_step_memory
    from samtune.training.memory_check import module_inputs

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


def run_train_job(job: dict[str, Any], isolate: bool) -> dict[str, Any]:
    """``train_job`` in a fresh Python process (``isolate``) or in this one."""
    job = {**job, "isolated": isolate}
    if not isolate:
        result = train_job(job)
        gc.collect()
        return result
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, __file__, "--train-job", json.dumps(job)],
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


def add_train_ratios(rows: list[dict[str, Any]]) -> None:
    """Speed-ups vs ``frozen_recomputed`` and ``full`` (measured and FLOP-predicted), memory vs full."""
    for size in {r["size"] for r in rows}:
        by = {r["config"]: r for r in rows if r["size"] == size}
        for r in by.values():
            for ref_name in ("frozen_recomputed", "full"):
                ref = by.get(ref_name)
                if ref is None:
                    continue
                tag = "vs_frozen" if ref_name == "frozen_recomputed" else "vs_full"
                r[f"speedup_{tag}"] = ref["sec_per_step"] / r["sec_per_step"]
                r[f"flop_speedup_{tag}"] = ref["flops_per_step"] / max(1, r["flops_per_step"])
            if "full" in by:
                r["memory_vs_full"] = r["peak_memory_mb"] / by["full"]["peak_memory_mb"]
        hit = by.get("frozen_cache_hit")
        if hit is not None and "speedup_vs_frozen" in hit:
            hit["fraction_of_flop_speedup"] = (
                hit["speedup_vs_frozen"] / hit["flop_speedup_vs_frozen"]
            )


def bench_train(args, device: torch.device) -> list[dict[str, Any]]:
    """All training configurations for every ``--train-sizes`` entry."""
    rows = []
    for size in args.train_sizes:
        for config in args.train_configs:
            job = {
                "config": config,
                "size": size,
                "image_size": args.image_size,
                "batch": args.batch,
                "steps": args.steps,
                "device": str(device),
                "precision": args.train_precision,
                "threads": torch.get_num_threads(),
                "data": str(args.data) if args.data else "",
                "prompts": args.prompt_overrides,
            }
            row = run_train_job(job, args.isolate)
            rows.append(row)
            print(
                f"  train {size} {config}: {row['sec_per_step']:.2f} s/step, "
                f"{row['peak_memory_mb']:.0f} MB (estimated {row['estimated_memory_mb']:.0f} MB)",
                flush=True,
            )
    add_train_ratios(rows)
    return rows


def bench_cache(args, device: torch.device) -> list[dict[str, Any]]:
    """Frozen + cache hit vs frozen recomputed, alternating steps in one process, per size."""
    rows = []
    for size in args.train_sizes:
        job = {
            "config": "frozen_interleaved",
            "size": size,
            "image_size": args.image_size,
            "batch": args.batch,
            "steps": args.pairs,
            "device": str(device),
            "precision": args.train_precision,
            "threads": torch.get_num_threads(),
            "data": str(args.data) if args.data else "",
            "prompts": args.prompt_overrides,
        }
        row = run_train_job(job, args.isolate)
        rows.append(row)
        print(
            f"  cache {size}: hit {row['sec_hit']:.2f} s, recomputed {row['sec_recomputed']:.2f} s "
            f"({row['speedup']:.2f}x; FLOPs predict {row['flop_speedup']:.2f}x)",
            flush=True,
        )
    return rows


# ---------------------------------------------------------------------------- evaluation
def _official_predictor(model: torch.nn.Module):
    """The official predictor around ``model``; below 1024 px its hard-coded feature sizes are
    replaced by the model's (the official class cannot run otherwise)."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    predictor = SAM2ImagePredictor(model)
    if int(model.image_size) != 1024:
        predictor._bb_feat_sizes = feature_sizes(model)
    return predictor


def bench_eval(args, device: torch.device) -> dict[str, Any]:
    """samtune's Evaluator (point1) vs the official predictor, one object at a time."""

    samples = [s for s in load_samples(args.data, args.eval_images) if s.masks.shape[0] > 0]
    if args.eval_max_objects:  # the same first objects for both sides
        samples = [Sample(s.image, s.masks[: args.eval_max_objects], meta=s.meta) for s in samples]
    model = build_sam2_model(args.eval_size, image_size=args.eval_image_size).to(device).eval()
    objects = sum(int(s.masks.shape[0]) for s in samples)

    def evaluator_seconds(image_batch, objects_per_decode) -> tuple[float, Any, tuple]:
        evaluator = Evaluator(
            protocols=["point1"],
            progress=False,
            image_batch=image_batch,
            objects_per_decode=objects_per_decode,
        )
        evaluator.evaluate(model, samples[:1], device=device)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        with autocast(device, args.eval_precision):
            result = evaluator.evaluate(model, samples, device=device)
        sync(device)
        settings = evaluator.settings_for(model, device)
        return time.perf_counter() - t0, result, settings

    # the configured default ("auto": resolved for the device), then every object of 4 images in
    # one decoder call (the accelerator setting; on a CPU its working set outgrows the caches)
    eval_batch = args.eval_batch if args.eval_batch == "auto" else int(args.eval_batch)
    samtune_s, result, settings = evaluator_seconds(eval_batch, "auto")
    batched_s, _, _ = evaluator_seconds(4, None)

    predictor = _official_predictor(model)
    clicks = [center_points(torch.from_numpy(s.masks)).numpy() for s in samples]
    with torch.inference_mode(), autocast(device, args.eval_precision):
        predictor.set_image(samples[0].image)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        for s, pts in zip(samples, clicks):
            predictor.set_image(s.image)
            for p in pts:
                predictor.predict(
                    point_coords=p[None], point_labels=np.array([1]), multimask_output=True
                )
        sync(device)
    official_s = time.perf_counter() - t0
    row = {
        "model": args.eval_size,
        "image_size": args.eval_image_size,
        "precision": args.eval_precision,
        "images": len(samples),
        "objects": objects,
        "evaluated_objects": len(result.protocol_rows("point1")),
        "samtune_image_batch": settings[0],
        "samtune_objects_per_decode": settings[1],
        "samtune_objects_per_s": objects / samtune_s,
        "samtune_all_objects_per_decode_objects_per_s": objects / batched_s,
        "official_objects_per_s": objects / official_s,
    }
    row["speedup"] = row["samtune_objects_per_s"] / row["official_objects_per_s"]
    row["speedup_all_objects_per_decode"] = official_s / batched_s
    print(
        f"  eval: samtune {row['samtune_objects_per_s']:.1f} obj/s, official {row['official_objects_per_s']:.1f} obj/s",
        flush=True,
    )
    return row


# ---------------------------------------------------------------------------- predictor
def _sam2_hydra() -> None:
    """``build_sam2`` composes sam2's configs through Hydra's global state, which importing sam2
    sets up once; set it up again if someone (a test fixture, a Hydra app) has cleared it."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    if not GlobalHydra.instance().is_initialized():
        initialize_config_module("sam2", version_base="1.2")


def bench_predictor(args, device: torch.device) -> dict[str, Any]:
    """Latency of set_image + one predict: samtune.load_predictor vs the official build."""
    import inspect

    from sam2.build_sam import build_sam2

    name, size = args.eval_size, args.predictor_image_size
    samples = [s for s in load_samples(args.data, 2) if s.masks.shape[0] > 0]
    point = np.array([[samples[0].image.shape[1] / 2, samples[0].image.shape[0] / 2]])
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / f"{name}.pt"
        torch.manual_seed(0)
        torch.save({"model": build_sam2_model(name, image_size=size).state_dict()}, ckpt)
        overrides = [] if size == 1024 else [f"++model.image_size={size}"]
        _sam2_hydra()
        official = _official_predictor(
            build_sam2(
                get_model_info(name).sam2_config,
                str(ckpt),
                device=str(device),
                hydra_overrides_extra=overrides,
            )
        )
        accepted = inspect.signature(load_predictor).parameters
        kwargs = {
            k: v for k, v in {"device": str(device), "image_size": size}.items() if k in accepted
        }
        ours = samtune.load_predictor(str(ckpt), **kwargs)

    def once(predictor) -> None:
        with torch.inference_mode(), autocast(device, args.eval_precision):
            predictor.set_image(samples[0].image)
            predictor.predict(point_coords=point, point_labels=np.array([1]), multimask_output=True)

    results = {}
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


# ---------------------------------------------------------------------------- report
def _fmt(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table (then a blank line) through the reports' own renderer."""

    return to_markdown([Table(header, rows)]).split("\n")


def format_tables(result: dict[str, Any]) -> str:
    """Markdown tables of a benchmark result."""
    lines = [
        f"device: {result['device']}; torch {result['torch']}; threads {result['threads']}",
        "",
    ]
    enc = result.get("encoder")
    if isinstance(enc, list) and enc:
        lines += _table(
            [
                "encoder",
                "px",
                "precision",
                "images/s",
                "GFLOP/image",
                "achieved GFLOP/s",
                "of peak",
            ],
            [
                [
                    r["model"],
                    str(r["image_size"]),
                    r["precision"],
                    f"{r['images_per_s']:.2f}",
                    f"{r['gflop_per_image']:.1f}",
                    f"{r['achieved_gflops']:.1f}",
                    _fmt(r.get("fraction_of_peak"), ".1%"),
                ]
                for r in enc
            ],
        )
    train = result.get("train")
    if isinstance(train, list) and any("estimated_memory_mb" in r for r in train):
        lines += [
            "Training step memory: samtune's estimate (samtune.training.memory) vs measured",
            "",
        ]
        lines += _table(
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
                for r in train
                if "estimated_memory_mb" in r
            ],
        )
    if isinstance(train, list) and train:
        lines += _table(
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
                    f"{_fmt(r.get('speedup_vs_frozen'))}x ({_fmt(r.get('flop_speedup_vs_frozen'))}x)",
                    f"{_fmt(r.get('speedup_vs_full'))}x ({_fmt(r.get('flop_speedup_vs_full'))}x)",
                    f"{r['peak_memory_mb']:.0f}",
                    _fmt(r.get("memory_vs_full")),
                    f"{r['flops_per_step'] / 1e9:.1f}",
                ]
                for r in train
            ],
        )
        lines += [
            f"{r['size']}: cache hit reaches {r['fraction_of_flop_speedup']:.0%} of the speed-up "
            f"FLOPs predict ({r['speedup_vs_frozen']:.2f}x of {r['flop_speedup_vs_frozen']:.2f}x)\n"
            for r in train
            if "fraction_of_flop_speedup" in r
        ]
    cache = result.get("cache")
    if isinstance(cache, list) and cache:
        lines += _table(
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
                for r in cache
            ],
        )
    ev = result.get("eval")
    if isinstance(ev, dict) and "speedup" in ev:
        settings = (
            f"image_batch {ev['samtune_image_batch']}, "
            f"objects_per_decode {ev['samtune_objects_per_decode']}"
        )
        lines += _table(
            [
                "evaluation (point1)",
                "px",
                "images",
                "objects",
                "official loop obj/s",
                "samtune default obj/s (speed-up)",
                "samtune, 4 images and all objects per decode (speed-up)",
            ],
            [
                [
                    ev["model"],
                    str(ev["image_size"]),
                    str(ev["images"]),
                    str(ev["objects"]),
                    f"{ev['official_objects_per_s']:.2f}",
                    f"{ev['samtune_objects_per_s']:.2f} ({ev['speedup']:.2f}x; {settings})",
                    f"{ev['samtune_all_objects_per_decode_objects_per_s']:.2f} "
                    f"({ev['speedup_all_objects_per_decode']:.2f}x)",
                ]
            ],
        )
    pr = result.get("predictor")
    if isinstance(pr, dict) and "overhead" in pr:
        lines += _table(
            ["predictor (set_image + predict)", "px", "official s", "samtune s", "overhead"],
            [
                [
                    pr["model"],
                    str(pr["image_size"]),
                    f"{pr['official_s']:.3f}",
                    f"{pr['samtune_s']:.3f}",
                    f"{pr['overhead']:+.1%}",
                ]
            ],
        )
    for section in SECTIONS:
        if isinstance(result.get(section), dict) and "error" in result[section]:
            lines.append(f"{section}: not measured ({result[section]['error']})")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--quick`` overrides sizes, resolutions and repetitions."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
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
        type=Path,
        default=DEFAULT_DATA if DEFAULT_DATA.is_dir() else None,
        help="nuclei-mini folder (synthetic images when missing)",
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
        args.encoder_image_size = args.image_size = args.eval_image_size = (
            args.predictor_image_size
        ) = 128
        args.batch, args.steps, args.reps, args.eval_images, args.eval_max_objects = 1, 1, 1, 1, 6
        args.pairs = 1
        args.prompt_overrides = dict(QUICK_PROMPTS)
    if args.isolate is None:
        args.isolate = not args.quick
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the chosen sections; a section that fails is recorded with its error, not fatal."""
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    native = device.type == "cuda" or cpu_has_native_bf16()
    for attr in ("train_precision", "eval_precision"):
        if getattr(args, attr) == "auto":
            setattr(args, attr, "bf16" if native else "fp32")
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({platform.processor() or platform.machine()})",
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
    sections = {
        "encoder": bench_encoder,
        "train": bench_train,
        "cache": bench_cache,
        "eval": bench_eval,
        "predictor": bench_predictor,
    }
    for name in args.sections:
        print(f"[{name}]", flush=True)
        t0 = time.perf_counter()
        try:
            result[name] = sections[name](args, device)
        except Exception as exc:  # keep the other sections' numbers
            if args.quick:
                raise
            result[name] = {"error": f"{type(exc).__name__}: {exc}"}
            log.exception("benchmark section %s failed", name)
        result.setdefault("section_seconds", {})[name] = round(time.perf_counter() - t0, 1)
        if args.json != "-":  # what is measured so far survives a later failure
            write_text_atomic(args.json, json.dumps(result, indent=1, default=str))
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Console entry point; returns the result dict (for tests)."""
    args = parse_args(argv)
    if args.train_job:
        print(json.dumps(train_job(json.loads(args.train_job))))
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


if __name__ == "__main__":
    main()
