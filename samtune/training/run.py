"""One training run from a composed Hydra config: build, fit, evaluate (the best checkpoint, else
the weights at the end of training), summarise."""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from samtune.evaluation.evaluator import evaluate_dataset
from samtune.evaluation.report.files import console_table, write_results
from samtune.evaluation.results import EvaluatedWeights
from samtune.io_atomic import remove_stale_temporaries, write_json_atomic
from samtune.models.weights import is_none, read_training_checkpoint, safe_load
from samtune.training.checkpoint_io import AtomicCheckpointIO
from samtune.training.distributed import (
    check_launch,
    launched_as_rank_zero,
    resolve_find_unused,
)
from samtune.training.interrupt import InterruptCheckpoint, interrupted_message
from samtune.training.memory_check import fit_memory
from samtune.training.module import SamTuneModule
from samtune.training.progress import stdout_is_terminal
from samtune.training.resume import ContinueCsvLog, resume_config, task_overrides
from samtune.training.run_lock import RunLock, check_writable, write_hydra_record

log = logging.getLogger(__name__)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (AVX512-BF16 or AMX), read from /proc/cpuinfo."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str | None) -> str:
    """``null`` means bf16 autocast on a GPU (with TF32 matmuls on Ampere and later), bf16 autocast
    on a CPU with native bf16, and full fp32 on other CPUs (where emulated bf16 is slower)."""
    if precision not in (None, "null", "auto"):
        return str(precision)
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")
        return "bf16-mixed"
    return "bf16-mixed" if cpu_has_native_bf16() else "32-true"


def build_module(cfg: DictConfig) -> SamTuneModule:
    """The LightningModule described by ``cfg`` (model, adapter, prompts, loss, optim, speed)."""
    adapter = instantiate(cfg.adapter)
    speed = cfg.get("speed") or {}
    cache_cfg = speed.get("embedding_cache")
    use_cache = cache_cfg is not None and not adapter.encoder_trainable
    video = training_kind(cfg) == "video"
    if getattr(adapter, "memory", False) and not video:
        raise ValueError(
            "adapter.memory=true trains the memory path, which only clip steps reach: add "
            "training=video (and clip data: data=vos, frames, ctc or volume_clips)"
        )
    if video:
        from samtune.training.video_module import VideoModule, video_module_kwargs

        module_class, extra = VideoModule, video_module_kwargs(cfg)
    else:
        module_class, extra = SamTuneModule, {"val_evaluator": validation_evaluator(cfg)}
    return module_class(
        model=instantiate(cfg.model),
        adapter=adapter,
        prompts=instantiate(cfg.prompts),
        loss=instantiate(cfg.loss),
        optim=instantiate(cfg.optim),
        seed=int(cfg.seed),
        run_info={
            "adapter": OmegaConf.to_container(cfg.adapter, resolve=True),
            "data": describe_data(cfg),
            "config": OmegaConf.to_container(cfg, resolve=True),
        },
        embedding_cache=instantiate(cache_cfg) if use_cache else None,
        activation_checkpointing=bool(speed.get("activation_checkpointing", False)),
        checkpoint_prompt_steps=bool(speed.get("checkpoint_prompt_steps", False)),
        compile_encoder=bool(speed.get("compile_encoder", False)),
        **extra,
    )


def training_kind(cfg: DictConfig) -> str:
    """``image`` (image steps) or ``video`` (clip steps of SAM 2.1's memory path)."""
    kind = str((cfg.get("training") or {}).get("kind", "image"))
    if kind not in ("image", "video"):
        raise ValueError(f"training.kind must be image or video, got {kind!r}")
    return kind


def validation_evaluator(cfg: DictConfig) -> Any:
    """The evaluator validation runs: the ``evaluation`` config (the end-of-training and
    ``samtune-eval`` settings) with the protocols of ``validation.protocols``, no progress bar
    and no gallery."""
    validation = cfg.get("validation") or {}
    protocols = list(validation.get("protocols") or ("point1", "box"))
    return instantiate(cfg.evaluation, protocols=protocols, progress=False, gallery_size=0)


def describe_data(cfg: DictConfig) -> str:
    """A short name for the data of a run, the same for training and evaluation runs: the ``data``
    config choice (else the datamodule class) and its main path, if any."""
    from hydra.core.hydra_config import HydraConfig

    if cfg.get("data_name"):  # recorded by the run that a resumed run continues
        return str(cfg.data_name)
    name = None
    if HydraConfig.initialized():
        name = HydraConfig.get().runtime.choices.get("data")
    if not name:
        name = str(cfg.data.get("_target_", "?")).rsplit(".", 1)[-1]
    for key in ("root", "images", "train_images"):
        if cfg.data.get(key):
            return f"{name}({cfg.data.get(key)})"
    return str(name)


def run_training(cfg: DictConfig) -> dict[str, Any]:
    """Fit, evaluate (if asked: the best checkpoint, else the weights at the end of training),
    write ``summary.json`` and print a summary.

    Returns:
        The summary dict (also written to ``<output_dir>/summary.json``).
    """
    resume = None
    if not is_none(cfg.get("resume")):
        cfg, resume, _ = resume_config(cfg, task_overrides())
    out_dir = Path(cfg.paths.output_dir)
    if not launched_as_rank_zero():  # the other DDP ranks share rank 0's folder and lock
        return _fit_and_summarise(cfg, out_dir, resume)
    with RunLock(out_dir):
        if resume is None:  # a resumed run keeps its recorded .hydra/ files
            write_hydra_record(out_dir, cfg)
        return _fit_and_summarise(cfg, out_dir, resume)


def _fit_and_summarise(cfg: DictConfig, out_dir: Path, resume: Path | None) -> dict[str, Any]:

    start = time.time()
    ckpt_dir = out_dir / "checkpoints"
    if launched_as_rank_zero():
        check_writable(ckpt_dir)  # before any compute is spent
        remove_stale_temporaries(ckpt_dir)
    if resume is None and os.environ.get("SLURM_RESTART_COUNT", "0") not in ("", "0"):
        if (ckpt_dir / "last.ckpt").is_file():  # a requeued SLURM job picks up where it stopped
            resume = ckpt_dir / "last.ckpt"
            log.warning("SLURM requeue: resuming from %s", resume)
    L.seed_everything(int(cfg.seed), workers=True)

    data_kwargs = {}
    if "skip_log" in cfg.data and cfg.data.skip_log is None:
        data_kwargs["skip_log"] = str(out_dir / "skipped.jsonl")
    datamodule = instantiate(cfg.data, **data_kwargs)
    module = build_module(cfg)
    precision = resolve_precision(cfg.trainer.get("precision"))
    if fit_memory(cfg, module, precision):  # speed.fit_memory=auto changed settings
        datamodule = instantiate(cfg.data, **data_kwargs)
        module.run_info["config"] = OmegaConf.to_container(cfg, resolve=True)
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    interrupt = InterruptCheckpoint(ckpt_dir)
    callbacks.append(interrupt)
    if resume is not None:
        # samtune's datamodules resume their order mid-epoch (ShardedSampler.resume_at)
        warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended")
        step = int(safe_load(resume, what="training checkpoint")["global_step"])
        callbacks.append(ContinueCsvLog(out_dir / "csv" / "metrics.csv", before_step=step))
    trainer = instantiate(
        resolve_find_unused(cfg.trainer, correction_clicks=int(cfg.prompts.correction_clicks)),
        logger=loggers or False,
        callbacks=callbacks,
        precision=precision,
        # in a file or pipe the bar is noise; samtune.training.progress.ProgressLog logs lines instead
        enable_progress_bar=bool(cfg.trainer.get("enable_progress_bar", True))
        and stdout_is_terminal(),
        plugins=[AtomicCheckpointIO()],
    )
    check_launch(trainer)
    try:
        # weights_only: also Lightning's own loads (a requeued SLURM job restores hpc_ckpt_<n>.ckpt)
        trainer.fit(
            module,
            datamodule=datamodule,
            ckpt_path=str(resume) if resume else None,
            weights_only=True,
        )
    except (SystemExit, KeyboardInterrupt):
        if interrupt.saved_step is None:
            raise
        print(interrupted_message(interrupt.saved_step, out_dir), flush=True)
        raise SystemExit(interrupt.exit_code) from None
    if not trainer.is_global_zero:
        # Under DDP every rank runs this function; checkpoints and logs came from rank 0, and
        # the evaluation, summary and report are its job too. The other ranks stop here rather
        # than wait at a barrier, which would time out during a long evaluation.
        return {"rank": int(trainer.global_rank), "best_val": module.best_metrics}

    ckpt_cb = trainer.checkpoint_callback
    best = getattr(ckpt_cb, "best_model_path", "") or ""
    last = str(ckpt_dir / "last.ckpt") if (ckpt_dir / "last.ckpt").is_file() else ""
    note = validation_note(trainer, module)
    if note:
        log.warning("%s", note)
    summary: dict[str, Any] = {
        "model": module.spec.name,
        "image_size": int(module.spec.image_size),
        "adapter": module.adapter.name,
        "checkpoint": module.spec.resolved_checkpoint,
        "random_init": bool(module.spec.random_init),
        "data": describe_data(cfg),
        "parameters": module.param_report,
        "global_step": int(trainer.global_step),
        "validated": note is None,
        "validation_note": note,
        "best_val": module.best_metrics,
        "best_checkpoint": best,
        "last_checkpoint": last,
        "output_dir": str(out_dir),
        "data_summary": datamodule.summary() if hasattr(datamodule, "summary") else "",
    }
    if cfg.get("evaluate_after_training", False):
        summary["eval"] = evaluate_module(
            cfg,
            module,
            datamodule,
            out_dir / "eval",
            best=best,
            last=last,
            global_step=int(trainer.global_step),
        )
    summary["wall_time_s"] = round(time.time() - start, 1)
    write_json_atomic(out_dir / "summary.json", summary, indent=2, default=str)
    print(format_summary(summary), flush=True)
    for lg in loggers:
        if type(lg).__name__ == "WandbLogger":
            import wandb

            wandb.finish()
    return summary


def validation_note(trainer: L.Trainer, module: SamTuneModule) -> str | None:
    """None when the run validated (in this attempt or one it resumed), else why it did not, as
    the log and the summary say it."""
    if module.best_metrics:
        return None
    every = trainer.check_val_every_n_epoch
    epochs = int(trainer.current_epoch)
    if not trainer.enable_validation:
        why = "validation is off (no val data, or trainer.limit_val_batches=0)"
    elif every is not None and epochs < every:
        why = f"trainer.check_val_every_n_epoch={every}, and the run ended after {epochs} epoch(s)"
    else:
        why = "no validation gave a number"
    return f"no validation ran in this run: {why}; there is no best.ckpt"


def weights_for_evaluation(
    module: SamTuneModule, best: str, last: str, global_step: int
) -> EvaluatedWeights:
    """Put the weights to evaluate at the end of training into ``module`` and say which they are.

    ``best.ckpt`` when there is one. Otherwise the weights at the end of training, read back
    from ``last.ckpt`` when it was saved at the last step (it is, unless its callback was turned
    off), else the weights in memory.
    """
    random_init = bool(module.spec.random_init)
    for path, kind in ((best, "checkpoint"), (last, "end_of_training")):
        if not path or not Path(path).is_file():
            continue
        ckpt = read_training_checkpoint(path)
        step = int(ckpt.get("global_step", -1))
        if kind == "end_of_training" and step != global_step:
            log.warning("%s is from step %d, not the last step %d", path, step, global_step)
            break
        module.on_load_checkpoint(ckpt)  # a small checkpoint gets its frozen weights back
        module.load_state_dict(ckpt["state_dict"], strict=True)
        return EvaluatedWeights(kind, path=str(path), global_step=step, random_init=random_init)
    return EvaluatedWeights("end_of_training", global_step=global_step, random_init=random_init)


def evaluate_module(
    cfg: DictConfig,
    module: SamTuneModule,
    datamodule: Any,
    out_dir: Path,
    *,
    best: str,
    last: str,
    global_step: int,
) -> dict[str, Any]:
    """Evaluate a finished run with the fixed protocols (the best checkpoint, else the weights at
    the end of training, ``global_step``: see :func:`weights_for_evaluation`); write the report
    files."""
    weights = weights_for_evaluation(module, best, last, global_step)
    log.info("evaluating %s on the val split", weights.label())
    model = module.model.eval()
    evaluator = instantiate(cfg.evaluation)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    result, volumes = evaluate_dataset(
        evaluator,
        model,
        datamodule.raw_dataset("val"),
        device=device,
        min_object_area=getattr(datamodule, "min_object_area", None),
    )
    files = write_results(
        result,
        out_dir,
        volumes=volumes,
        summary={
            "model": module.spec.name,
            "image_size": int(module.spec.image_size),
            "adapter": module.adapter.name,
            "evaluated": weights.as_dict(),
            "checkpoint": weights.path,
            "base_checkpoint": module.spec.resolved_checkpoint,
            "random_init": bool(module.spec.random_init),
            "data": describe_data(cfg),
            "split": "val",
            "seed": int(cfg.seed),
        },
    )
    headline = {}
    for protocol, agg in result.aggregates().items():
        headline[protocol] = {
            k: v for k, v in agg.items() if k in ("n_objects", "miou", "mdice", "noc85", "noc90")
        }
    return {
        "weights": weights.label(),
        "evaluated": weights.as_dict(),
        "aggregates": headline,
        "counts": result.counts(),
        "files": {k: str(v) for k, v in files.items()},
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The one-screen summary printed at the end of ``samtune-train``."""
    bar = "=" * 78
    lines = [bar, "samtune: training finished".center(78), bar]
    weights = (
        "RANDOM INIT (no checkpoint) - numbers are not SAM 2.1's"
        if summary["random_init"]
        else summary["checkpoint"]
    )
    lines.append(f"model      {summary['model']} @ {summary['image_size']} px; weights: {weights}")
    p = summary["parameters"]
    lines.append(
        f"adapter    {summary['adapter']}: {p['trainable']:,} trainable of {p['total']:,} parameters"
    )
    lines.append(f"data       {summary['data']}")
    if summary.get("data_summary"):
        for row in str(summary["data_summary"]).splitlines():
            lines.append(f"           {row}")
    best = summary.get("best_val") or {}
    if best:
        parts = ", ".join(f"{k.removeprefix('val/')} {v:.3f}" for k, v in best.items())
        lines.append(f"best val   {parts}")
    elif summary.get("validation_note"):
        lines.append(f"best val   none: {summary['validation_note']}")
    ev = summary.get("eval")
    if ev:
        rows = {p: a for p, a in ev["aggregates"].items() if isinstance(a, dict) and "miou" in a}
        lines.append(f"eval       {ev.get('weights', 'best checkpoint')} on the val split:")
        lines += [f"           {row}" for row in console_table(rows).splitlines()]
    lines.append(f"files      best checkpoint  {summary['best_checkpoint'] or '-'}")
    lines.append(f"           last checkpoint  {summary['last_checkpoint'] or '-'}")
    lines.append(f"           metrics (CSV)    {summary['output_dir']}/csv/metrics.csv")
    if ev:
        for name in ("results", "report_html", "report_md"):
            if name in ev["files"]:
                lines.append(f"           {name:<16} {ev['files'][name]}")
    lines.append(f"           summary          {summary['output_dir']}/summary.json")
    lines.append(f"time       {summary.get('wall_time_s', 0):.0f} s")
    lines.append(bar)
    return "\n".join(lines)
