"""``samtune-eval``: evaluate a SAM 2.1 model (zero-shot or tuned) with the fixed protocols.

Writes ``results.json``, ``per_object.csv``, ``report.md``/``.html`` and PNGs into the Hydra
run folder, and logs them to W&B when ``wandb=true``. On a volume dataset (``data=volumes``)
the slice predictions are also stacked into volumes and scored with 3D Dice per class and
volume (``volumes`` in ``results.json``, ``per_volume.csv``, a report section).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

import samtune
from samtune.cli._hydra import command_line_keys, run_hydra_app
from samtune.evaluation.evaluator import evaluate_dataset
from samtune.evaluation.report.files import console_table, write_results
from samtune.evaluation.report.wandb_log import log_to_wandb
from samtune.models.weights import is_none, load_model
from samtune.training.run import describe_data

log = logging.getLogger(__name__)


def _output_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def _wandb_run(cfg: DictConfig, out_dir: Path) -> Any:
    """A W&B run from the logger group (a ``WandbLogger``) or else an offline ``wandb.init``."""
    from hydra.utils import instantiate

    logger_cfg = cfg.get("logger")
    if logger_cfg:
        configs = [logger_cfg] if "_target_" in logger_cfg else list(logger_cfg.values())
        for c in configs:
            if "wandb" in str(c.get("_target_", "")).lower():
                return instantiate(c).experiment
    import wandb

    return wandb.init(mode="offline", project="samtune", job_type="eval", dir=str(out_dir))


def evaluate(cfg: DictConfig, out_dir: Path, data_name: str) -> dict[str, Path]:
    """Build model, data and evaluator from ``cfg``, evaluate, and write the results.

    Args:
        cfg: the composed ``eval`` config.
        out_dir: where the results go.
        data_name: the data choice, recorded in the summary.

    Returns:
        The written files (see :func:`samtune.evaluation.report.files.write_results`).
    """
    import lightning
    from hydra.utils import instantiate

    lightning.seed_everything(int(cfg.seed), workers=True)
    spec = instantiate(cfg.model)
    ckpt = None if is_none(cfg.ckpt) else str(cfg.ckpt)
    # a resolution given on the command line beats the one recorded with the weights
    explicit_size = spec.image_size if "model.image_size" in command_line_keys() else None
    model, info = load_model(ckpt, spec, image_size=explicit_size)
    if int(info["image_size"]) != int(cfg.model.image_size):
        # the data follow the model: ${model.image_size} resolves to the size it was built at
        with open_dict(cfg):
            cfg.model.image_size = int(info["image_size"])
    datamodule = instantiate(cfg.data)
    # a SamDataModule names an empty split and why; other datamodules give their split as is
    dataset = getattr(datamodule, "nonempty_dataset", datamodule.raw_dataset)(cfg.split)
    evaluator = instantiate(cfg.evaluation)
    result, volumes = evaluate_dataset(
        evaluator,
        model,
        dataset,
        device=cfg.device,
        max_images=cfg.max_images,
        min_object_area=getattr(datamodule, "min_object_area", None),
    )
    for protocol, scores in (volumes or {}).get("protocols", {}).items():
        log.info(
            "%s: mean 3D Dice %.4f over %d volumes", protocol, scores["mean"], scores["n_volumes"]
        )
    summary = {
        "model": info.get("name", spec.name),
        "image_size": info.get("image_size", spec.image_size),
        "adapter": info.get("adapter"),
        "checkpoint": ckpt,
        "weights": info.get("checkpoint", getattr(spec, "resolved_checkpoint", None)),
        "random_init": bool(info.get("random_init", False)),
        "data": data_name,
        "split": cfg.split,
        "seed": int(cfg.seed),
        "samtune_version": samtune.__version__,
        "config": OmegaConf.to_container(cfg.evaluation, resolve=True),
    }
    files = write_results(result, out_dir, summary=summary, volumes=volumes)
    if cfg.get("wandb"):
        run = _wandb_run(cfg, out_dir)
        run.config.update({"summary": summary}, allow_val_change=True)
        log_to_wandb(result, run)
        for protocol, scores in (volumes or {}).get("protocols", {}).items():
            run.summary[f"eval/{protocol}/volume_dice"] = scores["mean"]
        run.finish()
    if hasattr(datamodule, "summary"):
        log.info("data: %s", datamodule.summary())
    log.info("results written to %s", out_dir)
    print(results_text(result.aggregates(), summary, files), flush=True)
    return files


def results_text(
    aggregates: dict[str, Any], summary: dict[str, Any], files: dict[str, Path]
) -> str:
    """What ``samtune-eval`` prints at the end: the run, the protocol table, the report files."""
    weights = (
        "RANDOM INIT (no checkpoint)" if summary.get("random_init") else summary.get("weights")
    )
    lines = [
        f"samtune-eval: {summary.get('model')} @ {summary.get('image_size')} px, "
        f"checkpoint {summary.get('checkpoint') or 'none (zero-shot)'}, weights {weights}",
        f"data {summary.get('data')}, split {summary.get('split')}, seed {summary.get('seed')}",
        "",
        console_table(aggregates),
        "",
    ]
    lines += [
        f"{name:<12} {path}"
        for name, path in files.items()
        if name.startswith(("results", "report"))
    ]
    return "\n".join(lines)


def task(cfg: DictConfig) -> None:
    """The Hydra task: evaluate into the run folder."""

    evaluate(cfg, _output_dir(), describe_data(cfg))


def main() -> None:
    """Entry point of ``samtune-eval``."""

    run_hydra_app(task, "eval")


if __name__ == "__main__":
    main()
