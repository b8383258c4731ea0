"""``samtune-eval`` of a training run: its checkpoint, the data it trained with, and the check
that the evaluated images are not the ones it trained on.

A samtune ``.ckpt`` records the run's whole config (``ckpt["samtune"]["config"]``, written by
``SamTuneModule.on_save_checkpoint``). Without ``data=`` or ``data.*`` on the command line the
evaluation builds its data from that record, so a seeded split (``data.seed``,
``data.val_fraction``, file lists, roots) is the run's own. A ``data.<key>=`` value changes that
key of the record (an explicit value beats a recorded one); ``data=<name>`` starts from that data
config instead. Whatever the data, the evaluated split is compared with the run's training split
(by file): an overlap stops the evaluation with the count, or is warned about with
``evaluation.allow_overlap=true``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.utils import get_class, instantiate
from lightning import LightningDataModule
from omegaconf import DictConfig, OmegaConf

from samtune.data.sample import DataError
from samtune.models.state_dicts import CheckpointError
from samtune.models.weights import read_training_checkpoint

log = logging.getLogger(__name__)

BEST, LAST = "best.ckpt", "last.ckpt"
DATA_PACKAGE = "samtune.data."
SHOWN_FILES = 5  # file names an overlap message lists
_ABSENT = object()


class TrainingOverlapError(DataError):
    """The evaluated images include images the evaluated weights were trained on."""


def run_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint ``ckpt=`` names: a file as it is; for a run folder (or its
    ``checkpoints`` folder) its ``best.ckpt``, else its ``last.ckpt`` (the choice is logged).

    Raises:
        CheckpointError: a folder with neither file, or a path that does not exist.
    """
    given = Path(path).expanduser()
    if given.is_file():
        return given
    if not given.is_dir():
        raise CheckpointError(f"ckpt={path}: no such checkpoint file or run folder")
    folder = (
        given if (given / BEST).is_file() or (given / LAST).is_file() else given / "checkpoints"
    )
    for name, why in ((BEST, "the best validation"), (LAST, "no best.ckpt: the latest state")):
        if (folder / name).is_file():
            log.info("ckpt=%s: evaluating %s (%s)", path, folder / name, why)
            return folder / name
    raise CheckpointError(
        f"ckpt={path}: a folder without checkpoints/{BEST} or checkpoints/{LAST}; pass a run "
        "folder of samtune-train or a checkpoint file"
    )


@dataclass
class TrainingRecord:
    """What a samtune training checkpoint says about its run.

    Attributes:
        checkpoint: the ``.ckpt`` file.
        global_step: the optimizer steps behind its weights.
        data: the run's ``data`` config (resolved), or None when nothing recorded it.
        data_name: the run's short data name (``describe_data``), if recorded.
        data_source: where ``data`` was read (the checkpoint or the run's ``.hydra/config.yaml``).
    """

    checkpoint: Path
    global_step: int | None
    data: dict[str, Any] | None
    data_name: str | None
    data_source: str


def read_training_record(path: str | os.PathLike) -> TrainingRecord:
    """The record of the run that wrote the samtune checkpoint ``path``: its step and data
    config, from the checkpoint, else from the run folder's ``.hydra/config.yaml``.

    Raises:
        CheckpointError: not a samtune training checkpoint.
    """
    path = Path(path)
    ckpt = read_training_checkpoint(path)
    meta = ckpt["samtune"]
    step = ckpt.get("global_step")
    data, source = None, ""
    config = meta.get("config")
    if isinstance(config, dict) and isinstance(config.get("data"), dict):
        data, source = config["data"], str(path)
    else:
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        hydra_file = run_dir / ".hydra" / "config.yaml"
        if hydra_file.is_file():
            data, source = _hydra_file_data(hydra_file), str(hydra_file)
    del ckpt
    return TrainingRecord(
        checkpoint=path,
        global_step=None if step is None else int(step),
        data=data,
        data_name=str(meta["data"]) if meta.get("data") else None,
        data_source=source,
    )


def _hydra_file_data(path: Path) -> dict[str, Any] | None:
    """The resolved ``data`` node of a run's ``.hydra/config.yaml`` (None if it cannot be
    resolved outside the run, e.g. through ``${hydra:...}``)."""
    config = OmegaConf.load(path)
    try:
        data = OmegaConf.to_container(config, resolve=True).get("data")
    except Exception as exc:  # OmegaConf raises several types for unresolvable values
        log.warning("%s: cannot resolve its data config (%s)", path, exc)
        return None
    return data if isinstance(data, dict) else None


def check_data_config(data: dict[str, Any], source: str) -> None:
    """Refuse a recorded data config that would build anything but one of samtune's datamodules
    (a file's ``_target_`` never reaches ``instantiate`` unchecked).

    Raises:
        CheckpointError: a ``_target_`` outside ``samtune.data``, a class that is not a Lightning
            datamodule, or a nested Hydra key (``_target_``, ``_partial_``...) anywhere below.
    """
    target = data.get("_target_")
    error = f"{source}: the recorded data config's _target_ {target!r}"
    if not isinstance(target, str) or not target.startswith(DATA_PACKAGE):
        raise CheckpointError(f"{error} is not one of samtune's datamodules; refusing to build it")
    try:
        cls = get_class(target)
    except Exception as exc:  # Hydra wraps the import error
        raise CheckpointError(f"{error} does not exist in this samtune ({exc})") from None
    if not (isinstance(cls, type) and issubclass(cls, LightningDataModule)):
        raise CheckpointError(f"{error} is not a datamodule; refusing to build it")
    for key in _hydra_keys({k: v for k, v in data.items() if k != "_target_"}):
        raise CheckpointError(f"{source}: the recorded data config holds {key!r}; refusing it")


def _hydra_keys(node: Any, prefix: str = "data") -> Iterable[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if str(key).startswith("_"):
                yield f"{prefix}.{key}"
            yield from _hydra_keys(value, f"{prefix}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _hydra_keys(value, f"{prefix}[{i}]")


def data_names_on_command_line(keys: Iterable[str]) -> list[str]:
    """The command-line keys that name data: ``data`` itself and every ``data.*``."""
    return sorted(k for k in keys if k == "data" or k.startswith("data."))


FROM_COMMAND_LINE, FROM_RUN, FROM_RUN_AND_COMMAND_LINE = (
    "command line",
    "recorded by the run",
    "recorded by the run, with data.* from the command line",
)


def eval_data_config(
    composed: DictConfig, record: TrainingRecord | None, keys: Iterable[str], image_size: int
) -> tuple[DictConfig, str]:
    """The data config to evaluate with, and where it comes from.

    Args:
        composed: this command's ``data`` config (its defaults and command-line overrides).
        record: the evaluated run's record, or None (weights of no samtune run).
        keys: the keys set on the command line (``data``, ``data.seed``, ...).
        image_size: the size the model is built at (the recorded data follows it, unless
            ``data.image_size`` is on the command line).

    Returns:
        ``composed`` (:data:`FROM_COMMAND_LINE`) when there is no record or ``data=`` is on the
        command line; else the recorded config (:data:`FROM_RUN`) with the command line's
        ``data.*`` values put in (:data:`FROM_RUN_AND_COMMAND_LINE`: an explicit value beats a
        recorded one).
    """
    keys = set(keys)
    if record is None or record.data is None or "data" in keys:
        return composed, FROM_COMMAND_LINE
    check_data_config(record.data, record.data_source)
    data = OmegaConf.create(record.data)
    named = [k for k in data_names_on_command_line(keys) if k != "data"]
    for key in named:
        sub = key.removeprefix("data.")
        value = OmegaConf.select(composed, sub, default=_ABSENT)
        if value is _ABSENT:  # ~data.key removed it
            parent, _, leaf = sub.rpartition(".")
            node = OmegaConf.select(data, parent) if parent else data
            if isinstance(node, DictConfig) and leaf in node:
                del node[leaf]
        else:
            OmegaConf.update(data, sub, value, force_add=True)
    if "image_size" in data and "data.image_size" not in keys:
        data.image_size = int(image_size)
    return data, FROM_RUN_AND_COMMAND_LINE if named else FROM_RUN


def dataset_files(dataset: Any) -> list[str] | None:
    """The file of every item of a Sample dataset (``file_of``), resolved where it exists; None
    for a dataset that cannot name its files."""
    file_of = getattr(dataset, "file_of", None)
    if file_of is None:
        return None
    files = []
    for index in range(len(dataset)):
        name = str(file_of(index))
        files.append(os.path.realpath(name) if os.path.exists(name) else name)
    return files


def overlap_with_training(
    eval_files: list[str], train_files: list[str], *, split: str, allow: bool
) -> dict[str, Any]:
    """Compare the evaluated images with the run's training images.

    Returns:
        ``{"images": evaluated files, "overlap": files in both, "examples": the first
        :data:`SHOWN_FILES` of them}``.

    Raises:
        TrainingOverlapError: files in both, unless ``allow`` (then it is logged as a warning).
    """
    train = set(train_files)
    shared = sorted({f for f in eval_files if f in train})
    found = {
        "images": len(set(eval_files)),
        "overlap": len(shared),
        "examples": shared[:SHOWN_FILES],
    }
    if not shared:
        return found
    names = ", ".join(Path(f).name for f in shared[:SHOWN_FILES])
    more = f" and {len(shared) - SHOWN_FILES} more" if len(shared) > SHOWN_FILES else ""
    message = (
        f"{len(shared)} of the {found['images']} image(s) of the evaluated {split!r} split are "
        f"training images of the run that wrote these weights ({names}{more}): its numbers would "
        "be inflated"
    )
    if not allow:
        raise TrainingOverlapError(
            f"{message}. Evaluate the run's own split (leave data= and data.* off the command "
            "line) or other images; evaluation.allow_overlap=true evaluates them anyway"
        )
    log.warning("%s (evaluation.allow_overlap=true: evaluating them anyway)", message)
    return found


def training_files(record: TrainingRecord, datamodule: Any = None) -> list[str] | None:
    """The files of the run's training split, from ``datamodule`` when it was built from the
    record, else from a datamodule built from the record now (None when the record names no
    data, or its datamodule cannot name its files)."""
    if record.data is None:
        return None
    if datamodule is None:
        check_data_config(record.data, record.data_source)
        datamodule = instantiate(OmegaConf.create(record.data))
    return dataset_files(datamodule.raw_dataset("train"))
