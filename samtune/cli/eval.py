"""``samtune-eval``: evaluate a SAM 2.1 model (zero-shot or tuned) with the fixed protocols.

``ckpt=`` a samtune ``.ckpt`` or run folder evaluates on the data the run recorded unless the
command line names ``data`` (:mod:`samtune.evaluation.follow_run`); ``results.json`` records the
weights evaluated (``summary.evaluated``) and the protocols' versions (``protocol_version``).

Writes ``results.json``, ``per_object.csv``, ``report.md``/``.html`` and PNGs into the Hydra
run folder, and logs them to W&B when ``wandb=true``. On a volume dataset (``data=volumes``)
the slice predictions are also stacked into volumes and scored with 3D Dice per class and
volume (``volumes`` in ``results.json``, ``per_volume.csv``, a report section).

On clip data (``data=vos``, ``frames``, ``ctc``, ``volume_clips``) the ``clip_evaluation``
protocols run instead (:mod:`samtune.evaluation.clips`): one prompt per object on its first
annotated frame, propagated by the official ``SAM2VideoPredictor`` holding the evaluated
weights; J, F and J&F per protocol, per video and their mean are printed and written to
``results.json`` (``clips``) and ``per_object.csv``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

import samtune
from samtune.cli._hydra import command_line_keys, run_hydra_app
from samtune.data.datamodules.clips import ClipDataModule
from samtune.devices import resolve_device
from samtune.evaluation.clips import clip_table, video_predictor_for, write_clip_results
from samtune.evaluation.evaluator import evaluate_dataset
from samtune.evaluation.follow_run import (
    FROM_COMMAND_LINE,
    FROM_RUN,
    TrainingRecord,
    data_names_on_command_line,
    dataset_files,
    eval_data_config,
    overlap_with_training,
    read_training_record,
    run_checkpoint,
    training_files,
)
from samtune.evaluation.keyslice import KEYSLICE_VERSION, keyslice_box_evaluation
from samtune.evaluation.report.files import console_table, write_results
from samtune.evaluation.report.wandb_log import log_to_wandb
from samtune.evaluation.results import EvaluatedWeights
from samtune.models.registry import MODELS
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


def evaluate(
    cfg: DictConfig, out_dir: Path, data_name: str, command_line: set[str] | None = None
) -> dict[str, Path]:
    """Build model, data and evaluator from ``cfg``, evaluate, and write the results.

    The weights of a samtune run (``ckpt=`` a ``.ckpt`` or a run folder) are evaluated on the
    data the run recorded unless the command line names ``data`` (see
    :mod:`samtune.evaluation.follow_run`), and never silently on images it trained on.

    Args:
        cfg: the composed ``eval`` config.
        out_dir: where the results go.
        data_name: the data choice, recorded in the summary (the run's own name replaces it when
            the run's data are used).
        command_line: the keys set on the command line (default: the running Hydra job's).

    Returns:
        The written files (see :func:`samtune.evaluation.report.files.write_results`).

    Raises:
        TrainingOverlapError: the evaluated split shares images with the run's training split
            (and ``evaluation.allow_overlap`` is false).
    """
    import lightning
    from hydra.utils import instantiate

    keys = command_line_keys() if command_line is None else set(command_line)
    device = resolve_device(cfg.get("device"))
    lightning.seed_everything(int(cfg.seed), workers=True)
    spec = instantiate(cfg.model)
    ckpt = None if is_none(cfg.ckpt) else run_checkpoint(cfg.ckpt)
    record = read_training_record(ckpt) if ckpt is not None and ckpt.suffix == ".ckpt" else None
    # a resolution given on the command line beats the one recorded with the weights
    explicit_size = spec.image_size if "model.image_size" in keys else None
    model, info = load_model(ckpt, spec, image_size=explicit_size)
    if int(info["image_size"]) != int(cfg.model.image_size):
        # the data follow the model: ${model.image_size} resolves to the size it was built at
        with open_dict(cfg):
            cfg.model.image_size = int(info["image_size"])
    data_cfg, data_source = eval_data_config(cfg.data, record, keys, int(info["image_size"]))
    if record is not None and data_source != FROM_COMMAND_LINE:
        data_name = record.data_name or data_name
        named = data_names_on_command_line(keys)
        log.info(
            "data: the run's recorded data config (%s)%s",
            record.data_source,
            f" with {', '.join(named)} from the command line" if named else "",
        )
    datamodule = instantiate(data_cfg)
    # a SamDataModule names an empty split and why; other datamodules give their split as is
    dataset = getattr(datamodule, "nonempty_dataset", datamodule.raw_dataset)(cfg.split)
    overlap = None
    if record is not None:
        own = datamodule if data_source == FROM_RUN else None  # the run's split: no second index
        overlap = _check_overlap(cfg, record, dataset, own)
    weights = evaluated_weights(ckpt, info, record)
    if isinstance(datamodule, ClipDataModule):
        clip_config = cfg.get("clip_evaluation")
        summary = _summary(cfg, spec, ckpt, info, weights, data_name, data_source, clip_config)
        if overlap is not None:
            summary["training_overlap"] = overlap
        return evaluate_clip_data(cfg, model, info, dataset, summary, out_dir, device)
    evaluator = instantiate(cfg.evaluation)
    result, volumes = evaluate_dataset(
        evaluator,
        model,
        dataset,
        device=device,
        max_images=cfg.max_images,
        min_object_area=getattr(datamodule, "min_object_area", None),
    )
    for protocol, scores in (volumes or {}).get("protocols", {}).items():
        log.info(
            "oracle_per_slice %s: mean 3D Dice %.4f over %d volumes",
            protocol,
            scores["mean"],
            scores["n_volumes"],
        )
    if volumes is not None and hasattr(datamodule, "clip_dataset"):
        propagated = _propagated_volumes(
            cfg, model, info, datamodule, device, class_names=volumes.get("classes")
        )
        if propagated:
            volumes["propagated"] = propagated
            volumes["protocol_version"] = dict(KEYSLICE_VERSION)
    summary = _summary(cfg, spec, ckpt, info, weights, data_name, data_source, cfg.evaluation)
    if overlap is not None:
        summary["training_overlap"] = overlap
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
    text = results_text(result.aggregates(), summary, files)
    if volumes is not None:
        text += "\n\n" + volume_table(volumes)
    print(text, flush=True)
    return files


def _propagated_volumes(
    cfg: DictConfig,
    model: Any,
    info: dict[str, Any],
    datamodule: Any,
    device: Any,
    class_names: dict[int, str] | None = None,
) -> dict[str, Any]:
    """``{"keyslice_box": ...}`` (see :mod:`samtune.evaluation.keyslice`) on the volumes of the
    evaluated split, when ``clip_evaluation.volume_protocols`` names it."""
    settings = cfg.get("clip_evaluation") or {}
    if "keyslice_box" not in list(settings.get("volume_protocols") or []):
        return {}
    predictor = video_predictor_for(model, info, str(device))
    scores = keyslice_box_evaluation(
        predictor,
        datamodule.clip_dataset(cfg.split),
        tolerance_mm=float(settings.get("nsd_tolerance_mm", 2.0)),
        max_volumes=settings.get("max_videos"),
        class_names=class_names,
    )
    log.info(
        "keyslice_box: mean 3D Dice %.4f, NSD@%gmm %.4f over %d volumes",
        scores["mean"],
        scores["nsd_tolerance_mm"],
        scores["nsd"]["mean"],
        scores["n_volumes"],
    )
    return {"keyslice_box": scores}


def volume_table(volumes: dict[str, Any]) -> str:
    """Per volume: 3D Dice of each per-slice (oracle) protocol beside ``keyslice_box``'s 3D
    Dice and NSD (mean over classes), and the means."""
    oracle = volumes.get("protocols", {})
    propagated = volumes.get("propagated", {}).get("keyslice_box")
    columns = [f"oracle_per_slice {p} Dice" for p in oracle]
    if propagated:
        tol = propagated["nsd_tolerance_mm"]
        columns += ["keyslice_box Dice", f"keyslice_box NSD@{tol:g}mm"]
    cases = sorted({c for s in oracle.values() for c in s["volume_mean"]})
    if propagated:
        cases = sorted(set(cases) | set(propagated["volume_mean"]))
    width = max([len("volume"), len("mean")] + [len(c) for c in cases])
    lines = [f"{'volume':<{width}} " + " ".join(f"{c:>{max(len(c), 7)}}" for c in columns)]

    def cell(value: Any, column: str) -> str:
        text = "nan" if value is None or value != value else f"{value:.4f}"
        return f"{text:>{max(len(column), 7)}}"

    for case in [*cases, "mean"]:
        values = []
        for p in oracle:
            s = oracle[p]
            values.append(s["mean"] if case == "mean" else s["volume_mean"].get(case))
        if propagated:
            n = propagated["nsd"]
            if case == "mean":
                values += [propagated["mean"], n["mean"]]
            else:
                values += [propagated["volume_mean"].get(case), n["volume_mean"].get(case)]
        lines.append(
            f"{case:<{width}} " + " ".join(cell(v, c) for v, c in zip(values, columns, strict=True))
        )
    return "\n".join(lines)


def _summary(
    cfg: DictConfig,
    spec: Any,
    ckpt: Path | None,
    info: dict[str, Any],
    weights: EvaluatedWeights,
    data_name: str,
    data_source: str,
    evaluation: Any,
) -> dict[str, Any]:
    """The ``summary`` of ``results.json``: model, weights evaluated, data, split, settings."""
    return {
        "model": info.get("name", spec.name),
        "image_size": info.get("image_size", spec.image_size),
        "adapter": info.get("adapter"),
        "evaluated": weights.as_dict(),
        "checkpoint": None if ckpt is None else str(ckpt),
        "weights": info.get("checkpoint", getattr(spec, "resolved_checkpoint", None)),
        "random_init": bool(info.get("random_init", False)),
        "data": data_name,
        "data_config": data_source,
        "split": cfg.split,
        "seed": int(cfg.seed),
        "samtune_version": samtune.__version__,
        "config": OmegaConf.to_container(evaluation, resolve=True),
    }


def evaluate_clip_data(
    cfg: DictConfig,
    model: Any,
    info: dict[str, Any],
    dataset: Any,
    summary: dict[str, Any],
    out_dir: Path,
    device: Any = "cpu",
) -> dict[str, Path]:
    """The clip protocols (``clip_evaluation``) on whole videos through the official
    ``SAM2VideoPredictor`` holding the evaluated weights; writes ``results.json`` and
    ``per_object.csv`` (``per_round.csv`` for ``propagate_clicks``) and prints J, F and J&F per
    protocol, per video and their mean (and per round)."""
    from hydra.utils import instantiate

    evaluator = instantiate(cfg.clip_evaluation)
    if evaluator.max_videos is None and cfg.get("max_images") is not None:
        evaluator.max_videos = int(cfg.max_images)  # on clip data, max_images counts videos
    predictor = video_predictor_for(model, info, str(device))
    protocols = evaluator.run(predictor, dataset)
    files = write_clip_results(protocols, evaluator.protocol_versions(), summary, out_dir)
    for protocol, scores in protocols.items():
        log.info(
            "%s: J %.4f F %.4f J&F %.4f over %d videos",
            protocol,
            scores["J"],
            scores["F"],
            scores["JF"],
            scores["n_videos"],
        )
    if cfg.get("wandb"):
        run = _wandb_run(cfg, out_dir)
        run.config.update({"summary": summary}, allow_val_change=True)
        for protocol, scores in protocols.items():
            for key in ("J", "F", "JF"):
                run.summary[f"eval/{protocol}/{key}"] = scores[key]
            for r, value in enumerate(scores.get("JF_at_round", [])):
                run.summary[f"eval/{protocol}/JF@{r}"] = value
        run.finish()
    log.info("results written to %s", out_dir)
    print(clip_results_text(protocols, summary, files), flush=True)
    return files


def _header_lines(summary: dict[str, Any], table: str) -> list[str]:
    """The start of what ``samtune-eval`` prints: the model, the weights, the data, the table."""
    evaluated = summary.get("evaluated") or {}
    weights = evaluated.get("label") or summary.get("checkpoint") or "none (zero-shot)"
    random = ", RANDOM INIT base weights" if summary.get("random_init") else ""
    return [
        f"samtune-eval: {summary.get('model')} @ {summary.get('image_size')} px, {weights}{random}",
        f"data {summary.get('data')}, split {summary.get('split')}, seed {summary.get('seed')}",
        "",
        table,
        "",
    ]


def clip_results_text(
    protocols: dict[str, Any], summary: dict[str, Any], files: dict[str, Path]
) -> str:
    """What ``samtune-eval`` prints for clip data: the run, the J/F/J&F table, the files."""
    lines = _header_lines(summary, clip_table(protocols))
    lines += [f"{name:<12} {path}" for name, path in files.items()]
    return "\n".join(lines)


def _check_overlap(
    cfg: DictConfig, record: TrainingRecord, dataset: Any, recorded_datamodule: Any
) -> dict[str, Any] | None:
    """Compare the evaluated split with the run's training split (see
    :func:`~samtune.evaluation.follow_run.overlap_with_training`); None when it cannot be told."""
    eval_files = dataset_files(dataset)
    try:
        train_files = training_files(record, recorded_datamodule)
    except (OSError, ValueError) as exc:  # the run's data moved or cannot be read here
        log.warning("could not list the run's training images to compare (%s)", exc)
        train_files = None
    if eval_files is None or train_files is None:
        log.warning(
            "%s: cannot tell whether the evaluated images include the run's training images (%s)",
            record.checkpoint,
            "no data config recorded" if record.data is None else "files not listed",
        )
        return None
    allow = bool(cfg.evaluation.get("allow_overlap", False))
    return overlap_with_training(eval_files, train_files, split=str(cfg.split), allow=allow)


def evaluated_weights(
    ckpt: Path | None, info: dict[str, Any], record: TrainingRecord | None
) -> EvaluatedWeights:
    """What the evaluated weights are: untouched base weights (zero-shot), a training checkpoint
    at its step, an export, or a file of unknown origin."""
    random_init = bool(info.get("random_init", False))
    if ckpt is None:
        return EvaluatedWeights("base", path=info.get("checkpoint"), random_init=random_init)
    if record is not None:
        return EvaluatedWeights(
            "checkpoint", path=str(ckpt), global_step=record.global_step, random_init=random_init
        )
    if info.get("adapter") is not None:
        return EvaluatedWeights("export", path=str(ckpt), random_init=random_init)
    if ckpt.name in {m.checkpoint_file for m in MODELS.values()}:
        return EvaluatedWeights("base", path=str(ckpt), random_init=random_init)
    return EvaluatedWeights("file", path=str(ckpt), random_init=random_init)


def results_text(
    aggregates: dict[str, Any], summary: dict[str, Any], files: dict[str, Path]
) -> str:
    """What ``samtune-eval`` prints at the end: the run, the protocol table, the report files."""
    lines = _header_lines(summary, console_table(aggregates))
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
