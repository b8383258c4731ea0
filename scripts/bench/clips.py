"""Section ``clips``: SAM 2.1's memory path, a clip step against image steps and clip evaluation
against a plain ``SAM2VideoPredictor`` loop.

- Training: one clip step of ``training=video`` (:mod:`samtune.training.clip_step` through
  ``VideoModule.clip_step``: T frames, N objects, the recipe's correction frames, then backward
  and AdamW) against T image steps of the image module (``training=image``, the default prompt
  recipe: each frame one step with the same N objects), same model, size and adapter. Each side
  runs in its own process (with ``--isolate``) so that its peak memory is its own; the clip
  step's peak is printed next to samtune's estimate (:mod:`samtune.training.memory`).
- Evaluation: samtune's ``propagate_mask`` protocol (:func:`samtune.evaluation.clips.video_state`
  and :func:`~samtune.evaluation.clips.propagate_objects`, as ``ClipEvaluator`` runs it) against a
  hand-written loop over the official ``SAM2VideoPredictor`` (``init_state`` on the JPEG folder,
  ``add_new_mask`` per object, ``propagate_in_video``), same weights and clips; their masks must be
  equal (the section fails otherwise).

Clips are generated: ellipses of distinct colours moving on a noisy background, every object on
every frame. The clip step's prompts are the recipe's heaviest fixed plan (clicks or a box on two
initial conditioning frames, both corrected) drawn from one key, so every repetition does the
same work.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from samtune.data.clip import Clip
from samtune.data.clip_transforms import ClipTransform
from samtune.data.datamodules.clips import collate_clips
from samtune.evaluation.clips import propagate_objects
from samtune.inference.predictor import load_video_predictor
from samtune.inference.video import video_state
from samtune.models import get_model_info
from samtune.prompts.streams import PromptStreams
from samtune.segmenter.flops import FlopCounter
from samtune.training.memory import estimate_step_memory
from samtune.training.memory_check import clip_module_inputs
from samtune.training.optim import param_groups
from samtune.training.video_module import clip_generator
from scripts.bench.common import autocast, fmt, peak_rss_bytes, rss_bytes, sync, table, timed
from scripts.bench.compose import build_model, build_train_module, override
from scripts.bench.predictor import sam2_hydra
from scripts.bench.rig import run_job

CLIP_JOB, IMAGE_JOB = "clip_step", "clip_image_steps"
ROW_KEYS = ("size", "image_size", "frames", "objects", "precision")
CLIP_CONFIGS = ("frozen_recomputed", "lora", "lora_checkpointing", "full")
# the recipe's heaviest plan, the same in every repetition: clicks or a box (never masks), two
# initial conditioning frames (frame 0 and one drawn), both corrected
FIXED_PLAN = {
    "point_prob": 1.0,
    "rand_init_cond_frames": False,
    "rand_frames_to_correct": False,
}


def moving_clip(
    seed: int, frames: int, objects: int, height: int, width: int, folder: Path | None = None
) -> Clip:
    """A generated clip: ``objects`` ellipses of distinct colours, each moving in a straight line
    (bouncing off the borders), on a noisy grey background; every object on every frame.

    With ``folder``, the frames are written there as ``<t>.jpg`` (the layout
    ``SAM2VideoPredictor.init_state`` reads) and the clip holds the decoded JPEG pixels, so
    that a reader of either gets the same frames.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    shape = np.array([height, width], dtype=float)
    radius = rng.uniform(0.08, 0.16, size=(objects, 2)) * shape
    centre = rng.uniform(0.25, 0.75, size=(objects, 2)) * shape
    velocity = rng.uniform(-0.04, 0.04, size=(objects, 2)) * shape
    colours = rng.integers(60, 255, size=(objects, 3))
    video = np.empty((frames, height, width, 3), dtype=np.uint8)
    masks = np.zeros((objects, frames, height, width), dtype=bool)
    for t in range(frames):
        frame = rng.normal(40.0, 12.0, size=(height, width, 3))
        for n in range(objects):
            (cy, cx), (ry, rx) = centre[n], radius[n]
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
            masks[n, t] = inside & ~masks[:n, t].any(axis=0)  # the earlier objects are on top
            frame[masks[n, t]] = colours[n]
        video[t] = np.clip(frame, 0, 255).astype(np.uint8)
        centre += velocity
        for axis in (0, 1):  # bounce
            low, high = radius[:, axis], shape[axis] - radius[:, axis]
            out = (centre[:, axis] < low) | (centre[:, axis] > high)
            velocity[out, axis] *= -1
            centre[:, axis] = np.clip(centre[:, axis], low, high)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        for t, frame in enumerate(video):
            Image.fromarray(frame).save(folder / f"{t:05d}.jpg", quality=95)
            with Image.open(folder / f"{t:05d}.jpg") as image:
                video[t] = np.asarray(image.convert("RGB"))
    if not masks[:, 0].reshape(objects, -1).any(axis=1).all():
        raise ValueError(f"clip {seed}: an object is hidden on frame 0; draw another seed")
    return Clip(frames=video, masks=masks, meta={"file": f"moving-{seed}", "clip_id": str(seed)})


def clip_job(args: argparse.Namespace, device: torch.device, kind: str, config: str) -> dict:
    """The job of one side of the training comparison from the command-line options."""
    return {
        "config": kind,
        "adapter_config": config,
        "size": args.clip_size,
        "image_size": args.clip_image_size,
        "frames": args.clip_frames,
        "objects": args.clip_objects,
        "reps": args.clip_reps,
        "device": str(device),
        "precision": args.train_precision,
        "threads": torch.get_num_threads(),
    }


def training_clip(job: dict[str, Any]) -> dict[str, Any]:
    """The generated clip of a job as a collated batch of one clip at the model's input."""
    size = int(job["image_size"])
    clip = moving_clip(0, int(job["frames"]), int(job["objects"]), size * 3 // 4, size)
    item = ClipTransform(image_size=size, train=False)(clip)
    batch = collate_clips([{**item, "index": 0, "epoch": 0}])
    if batch is None or int(batch["masks"][0].shape[0]) != int(job["objects"]):
        raise ValueError("the generated clip lost objects in the transform: use a larger size")
    return batch


def _optimizer(module: Any) -> torch.optim.Optimizer:
    optim = module.optim_cfg
    groups = param_groups(
        module.model,
        lr=optim.lr,
        encoder_lr_scale=float(getattr(module.adapter, "encoder_lr_scale", 1.0)),
        weight_decay=optim.weight_decay,
    )
    return torch.optim.AdamW(groups, betas=tuple(optim.betas))


def measure_job(job: dict[str, Any]) -> dict[str, Any]:
    """One side of the training comparison: ``clip_step`` (one clip step) or
    ``clip_image_steps`` (T image steps, one per frame), warm-up and FLOP count first, then
    ``reps`` timed repetitions (meant for a fresh process)."""
    torch.set_num_threads(int(job["threads"]))
    device = torch.device(job["device"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    base_rss = rss_bytes()
    config, objects = job["adapter_config"], int(job["objects"])
    extra: list[str] = []  # frozen_recomputed: no cache, both sides encode every frame
    if job["config"] == CLIP_JOB:
        extra += ["training=video", "adapter.memory=true"]
        extra += [override(f"training.recipe.{k}", v) for k, v in FIXED_PLAN.items()]
    cfg, module = build_train_module(
        config, job["size"], job["image_size"], {"max_objects_per_image": objects}, extra=extra
    )
    batch = training_clip(job)
    module.to(device).train()
    optimizer = _optimizer(module)
    precision = job["precision"]
    if job["config"] == CLIP_JOB:
        batch = {**batch, "frames": batch["frames"].to(device)}

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, precision):
                terms = module.clip_step(batch, clip_generator(int(cfg.seed), 0, [0]))
            if terms is None:
                raise ValueError("the benchmark clip holds no object")
            terms["loss"].backward()
            optimizer.step()
    else:
        frames = batch["frames"][0].to(device)
        masks = batch["masks"][0].to(device)

        def step() -> None:
            for t in range(frames.shape[0]):
                streams = PromptStreams(torch.Generator().manual_seed(1000 + t))
                optimizer.zero_grad(set_to_none=True)
                with autocast(device, precision):
                    gt, img_idx = module.gather_objects([masks[:, t]], streams)
                    features = module.encode_images(frames[t : t + 1])
                    terms = module.interactive_loss(features, gt, img_idx, streams)
                terms["loss"].backward()
                optimizer.step()

    with FlopCounter() as counter:
        step()  # warm-up
    times = timed(step, device, int(job["reps"]))
    if device.type == "cuda":
        peak, memory_kind = torch.cuda.max_memory_allocated(device), "max_memory_allocated"
    else:
        peak, memory_kind = peak_rss_bytes() - base_rss, "peak RSS - RSS before building"
        if not job.get("isolated", False):
            memory_kind += " (in-process: includes earlier jobs, not comparable)"
    row = {
        **{k: job[k] for k in ("config", "adapter_config", "size", "image_size", "frames")},
        "objects": objects,
        "precision": precision,
        "sec": min(times),
        "sec_median": statistics.median(times),
        "times": times,
        "flops": counter.total,
        "peak_memory_mb": peak / 2**20,
        "memory_kind": memory_kind,
        "trainable_params": module.param_report["trainable"],
    }
    if job["config"] == CLIP_JOB:
        recipe = module.recipe
        row["correction_frames"] = recipe.num_frames_to_correct
        row["correction_clicks"] = recipe.correction_clicks
        row["memory_checkpointing"] = module.memory_checkpointing
        inputs = clip_module_inputs(
            module, batch=1, frames=row["frames"], objects=objects, bf16=precision == "bf16"
        )
        row["estimated_memory_mb"] = estimate_step_memory(inputs).total / 2**20
        row["prompt_steps"] = inputs.prompt_steps
    else:
        row["correction_clicks"] = int(module.prompts.correction_clicks)
    return row


def official_video_predictor(name: str, ckpt: Path, size: int, device: torch.device) -> Any:
    """sam2's own ``build_sam2_video_predictor`` on the checkpoint file ``ckpt``."""
    from sam2.build_sam import build_sam2_video_predictor

    sam2_hydra()
    overrides = [] if size == 1024 else [f"++model.image_size={size}"]
    return build_sam2_video_predictor(
        get_model_info(name).sam2_config,
        str(ckpt),
        device=str(device),
        hydra_overrides_extra=overrides,
    )


def plain_loop(predictor: Any, folder: Path, clip: Clip) -> dict[tuple[int, int], np.ndarray]:
    """What a user writes: ``init_state`` on the folder, every object's frame-0 mask, then
    ``propagate_in_video``; ``{(object index, frame): H x W bool}`` after frame 0."""
    state = predictor.init_state(video_path=str(folder))
    for n in range(clip.masks.shape[0]):
        predictor.add_new_mask(
            inference_state=state,
            frame_idx=0,
            obj_id=n + 1,
            mask=torch.from_numpy(clip.masks[n, 0]),
        )
    out = {}
    for t, obj_ids, logits in predictor.propagate_in_video(state, start_frame_idx=0):
        if t == 0:
            continue
        binary = (logits[:, 0] > 0).cpu().numpy()
        for row, obj_id in enumerate(obj_ids):
            out[(int(obj_id) - 1, int(t))] = binary[row]
    return out


def samtune_propagation(predictor: Any, clip: Clip) -> dict[tuple[int, int], np.ndarray]:
    """``ClipEvaluator``'s work for one clip and ``propagate_mask``: the state from the frames in
    memory, then the protocol; flattened like :func:`plain_loop`."""
    state = video_state(predictor, clip.frames)
    predictions = propagate_objects(predictor, clip, "propagate_mask", state=state)
    return {(n, t): m for n, (_, frames) in predictions.items() for t, m in frames.items()}


def measure_eval(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Seconds of samtune's ``propagate_mask`` and of the plain loop on ``--clip-videos`` clips,
    the fastest of ``--clip-reps`` interleaved repetitions; the masks compared."""
    name, size = args.clip_size, args.clip_image_size
    frames, objects = args.clip_frames, args.clip_objects
    with tempfile.TemporaryDirectory(prefix="samtune-bench-clips-") as tmp:
        root = Path(tmp)
        ckpt = root / f"{name}.pt"
        torch.manual_seed(0)
        torch.save({"model": build_model(name, size).state_dict()}, ckpt)
        official = official_video_predictor(name, ckpt, size, device)
        ours = load_video_predictor(str(ckpt), image_size=size, device=device)
        folders = [root / f"video{i}" for i in range(args.clip_videos)]
        clips = [
            moving_clip(100 + i, frames, objects, size * 3 // 4, size, folder=folder)
            for i, folder in enumerate(folders)
        ]

        def run_official() -> list[dict]:
            return [plain_loop(official, f, c) for f, c in zip(folders, clips)]

        def run_ours() -> list[dict]:
            return [samtune_propagation(ours, c) for c in clips]

        seconds: dict[str, list[float]] = {"official": [], "samtune": []}
        outputs: dict[str, list[dict]] = {}
        with torch.inference_mode(), autocast(device, args.eval_precision):
            for label, fn in (("official", run_official), ("samtune", run_ours)):
                outputs[label] = fn()  # warm-up, and the masks compared
            for _ in range(args.clip_reps):  # interleaved: drifting load hits both alike
                for label, fn in (("official", run_official), ("samtune", run_ours)):
                    sync(device)
                    t0 = time.perf_counter()
                    fn()
                    sync(device)
                    seconds[label].append(time.perf_counter() - t0)
    compared, mismatched = 0, []
    for v, (ref, got) in enumerate(zip(outputs["official"], outputs["samtune"])):
        if set(ref) != set(got):
            mismatched.append(f"video{v}: frames/objects differ")
            continue
        for key, mask in ref.items():
            compared += 1
            if not np.array_equal(mask, got[key]):
                mismatched.append(f"video{v} object {key[0]} frame {key[1]}")
    if mismatched:
        raise RuntimeError(
            f"samtune's propagate_mask masks differ from the plain SAM2VideoPredictor loop's on "
            f"{len(mismatched)} of {compared} (object, frame) pairs: {mismatched[:5]}"
        )
    row = {
        "model": name,
        "image_size": size,
        "frame_size": [size * 3 // 4, size],
        "videos": len(clips),
        "frames": frames,
        "objects": objects,
        "precision": args.eval_precision,
        "official_s": min(seconds["official"]),
        "samtune_s": min(seconds["samtune"]),
        "official_times": seconds["official"],
        "samtune_times": seconds["samtune"],
        "masks_compared": compared,
        "masks_equal": True,
    }
    row["ratio"] = row["samtune_s"] / row["official_s"]
    print(
        f"  clip eval: samtune {row['samtune_s']:.2f} s, plain SAM2VideoPredictor loop "
        f"{row['official_s']:.2f} s (ratio {row['ratio']:.2f}; {compared} masks equal)",
        flush=True,
    )
    return row


def measure(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """The training comparison for every ``--clip-configs`` entry, then the evaluation one."""
    training = []
    for config in args.clip_configs:
        clip = run_job(clip_job(args, device, CLIP_JOB, config), args.isolate, measure_job)
        if not args.clip_image_steps:
            training.append({"config": config, **{k: clip[k] for k in ROW_KEYS}, "clip": clip})
            print(
                f"  clip train {config}: clip step {clip['sec']:.2f} s, peak "
                f"{clip['peak_memory_mb']:.0f} MB (estimated {clip['estimated_memory_mb']:.0f} MB)",
                flush=True,
            )
            continue
        image = run_job(clip_job(args, device, IMAGE_JOB, config), args.isolate, measure_job)
        row = {
            "config": config,
            "size": clip["size"],
            "image_size": clip["image_size"],
            "frames": clip["frames"],
            "objects": clip["objects"],
            "precision": clip["precision"],
            "clip_step_s": clip["sec"],
            "image_steps_s": image["sec"],
            "ratio": clip["sec"] / image["sec"],
            "flop_ratio": clip["flops"] / max(1, image["flops"]),
            "clip": clip,
            "image": image,
        }
        training.append(row)
        print(
            f"  clip train {config}: clip step {row['clip_step_s']:.2f} s, {row['frames']} image "
            f"steps {row['image_steps_s']:.2f} s (ratio {row['ratio']:.2f}); clip step peak "
            f"{clip['peak_memory_mb']:.0f} MB (estimated {clip['estimated_memory_mb']:.0f} MB)",
            flush=True,
        )
    out: dict[str, Any] = {"train": training}
    if args.clip_eval:
        out["eval"] = measure_eval(args, device)
    return out


def tables(result: dict[str, Any]) -> list[str]:
    """The training table (with the clip step's memory) and the evaluation table."""
    lines = [
        "Clip step (training=video: T frames, N objects, corrections) vs T image steps",
        "",
    ]
    lines += table(
        ["model", "config", "px", "T", "N", "clip step s", "T image steps s", "ratio"]
        + ["FLOP ratio", "clip peak MB", "estimated MB"],
        [
            [
                r["size"],
                r["config"],
                str(r["image_size"]),
                str(r["frames"]),
                str(r["objects"]),
                f"{r['clip']['sec']:.2f}",
                fmt(r.get("image_steps_s")),
                fmt(r.get("ratio")),
                fmt(r.get("flop_ratio")),
                f"{r['clip']['peak_memory_mb']:.0f}",
                fmt(r["clip"].get("estimated_memory_mb"), ".0f"),
            ]
            for r in result["train"]
        ],
    )
    ev = result.get("eval")
    if ev is None:
        return lines
    lines += table(
        ["clip evaluation (propagate_mask)", "px", "videos x T x N", "plain loop s", "samtune s"]
        + ["ratio", "masks equal"],
        [
            [
                ev["model"],
                str(ev["image_size"]),
                f"{ev['videos']} x {ev['frames']} x {ev['objects']}",
                f"{ev['official_s']:.2f}",
                f"{ev['samtune_s']:.2f}",
                f"{ev['ratio']:.2f}",
                f"{ev['masks_equal']} ({ev['masks_compared']})",
            ]
        ],
    )
    return lines
