"""Every config in configs/ composes, and every group option instantiates."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate

from samtune.cli._hydra import CONFIG_DIR
from samtune.data.datasets.demo import NUCLEI_MINI
from samtune.models.weights import load_model
from samtune.training.run import build_module

TOP_LEVEL = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


def _compose(name: str, overrides: list[str], tmp_path: Path):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(name, overrides=overrides, return_hydra_config=True)
    cfg.hydra.runtime.output_dir = str(tmp_path)
    HydraConfig.instance().set_config(cfg)
    return cfg


def _required(name: str) -> list[str]:
    return {
        "export": ["ckpt=x.ckpt", "out=y.pt"],
        "predict": ["ckpt=x.pt", "images=d", "out=o"],
    }.get(name, [])


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_top_level_configs_compose(name, tmp_path):
    cfg = _compose(name, _required(name), tmp_path)
    assert cfg is not None


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiments_compose(experiment, tmp_path):
    cfg = _compose("train", [f"experiment={experiment}"], tmp_path)
    assert cfg.task_name == experiment


@pytest.mark.parametrize("group", ["model", "adapter", "prompts", "loss", "optim", "evaluation"])
def test_group_options_instantiate(group, tmp_path):
    options = sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
    assert options
    for option in options:
        cfg = _compose("train", [f"{group}={option}"], tmp_path)
        obj = instantiate(cfg[group])
        assert obj is not None, option


def test_trainer_logger_callbacks_instantiate(tmp_path):
    cfg = _compose("train", ["trainer=cpu", "model.image_size=128"], tmp_path)
    loggers = [instantiate(c) for c in cfg.logger.values()]
    callbacks = [instantiate(c) for c in cfg.callbacks.values()]
    trainer = instantiate(cfg.trainer, logger=loggers, callbacks=callbacks)
    assert trainer.max_epochs == cfg.trainer.max_epochs
    assert {type(lg).__name__ for lg in loggers} == {"CSVLogger", "WandbLogger"}
    assert all(
        getattr(lg, "_offline", True) for lg in loggers if type(lg).__name__ == "WandbLogger"
    )


def test_data_options_instantiate(tmp_path):
    root = Path(NUCLEI_MINI)
    overrides = {
        "nuclei_mini": [],
        "synthetic": [],
        "coco": [
            f"data.root={root / 'images'}",
            f"data.train_json={root / 'annotations' / 'train.json'}",
            f"data.val_json={root / 'annotations' / 'val.json'}",
        ],
        "folder": [f"data.train_images={root / 'images'}", f"data.train_masks={root / 'masks'}"],
    }
    options = sorted(p.stem for p in (CONFIG_DIR / "data").glob("*.yaml"))
    for option in options:
        extra = overrides.get(option)
        if (
            extra is None
        ):  # volumes: covered with its own synthetic NIfTI files in test_data_configs
            continue
        cfg = _compose("train", [f"data={option}", "model.image_size=128", *extra], tmp_path)
        dm = instantiate(cfg.data)
        dm.setup("fit")
        assert len(dm.raw_dataset("train")) > 0, option


def test_zero_shot_with_random_weights_starts_where_training_starts(tmp_path):
    """Same default seed in train.yaml and eval.yaml, so a random-weights zero-shot evaluation
    scores exactly the weights a random-weights training run starts from."""
    import lightning as L
    import torch
    from omegaconf import open_dict

    train = _compose(
        "train", ["model.image_size=128", "model.checkpoint=null", "adapter=frozen"], tmp_path
    )
    evaluation = _compose("eval", ["model.image_size=128", "model.checkpoint=null"], tmp_path)
    assert train.seed == evaluation.seed
    with open_dict(train):  # the task sees the config without its hydra node
        train.pop("hydra")

    L.seed_everything(int(train.seed))
    instantiate(train.data)
    start = build_module(train).model.state_dict()

    L.seed_everything(int(evaluation.seed))
    zero_shot, _ = load_model(None, instantiate(evaluation.model))
    for key, value in zero_shot.state_dict().items():
        assert torch.equal(start[key], value), key
