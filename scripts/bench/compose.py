"""Everything the sections measure, built from samtune's shipped Hydra configs.

The module of a training configuration is ``samtune.training.run.build_module`` of the composed
``train`` config (as ``samtune-train`` builds it); models, the evaluator and the data are
instantiated from their config groups. Images come from a folder of ``images/`` and ``masks/``
(``data=folder``) or, without one, from samtune's synthetic ellipses (``data=synthetic``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

import samtune
from samtune.data.datamodules.base import SamDataModule, collate
from samtune.data.sample import Sample
from samtune.training.module import SamTuneModule
from samtune.training.run import build_module

CONFIG_DIR = Path(samtune.__file__).resolve().parent / "configs"
# the synthetic stand-in for nuclei-mini: 12 bright ellipses of 8-22 px radius per image
SYNTHETIC = {"size": [256, 320], "objects": [12, 12], "radius": [0.03, 0.07]}


def compose_config(name: str, overrides: Sequence[str]) -> DictConfig:
    """The top-level config ``name`` (``train``, ``eval``) with ``overrides``, as its CLI composes it.

    ``import sam2`` initialises Hydra's global state for sam2's configs: it is cleared first
    (``predictor.py`` sets it up again for ``build_sam2``). Every value is resolved while the
    Hydra run config is registered (``paths.output_dir`` and others read it), then the registration
    is undone and the ``hydra`` node dropped: nothing global outlives the call.
    """
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(name, overrides=list(overrides), return_hydra_config=True)
    hydra_config = HydraConfig.instance()
    previous = hydra_config.cfg
    hydra_config.set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    try:
        OmegaConf.resolve(cfg)
    finally:
        hydra_config.cfg = previous
    return cfg


def override(key: str, value: Any) -> str:
    """A Hydra command-line override ``key=value`` for a Python value (JSON covers Hydra's syntax)."""
    return f"{key}={json.dumps(str(value) if isinstance(value, Path) else value)}"


def model_overrides(size: str, image_size: int) -> list[str]:
    """Random-init ``size`` at ``image_size`` px (timings do not depend on the weights)."""
    return [f"model={size}", f"model.image_size={int(image_size)}", "model.checkpoint=null"]


def data_overrides(data: Path | None, images: int) -> list[str]:
    """The first ``images`` images of the folder ``data`` (``images/``, ``masks/``), or as many
    synthetic ones when ``data`` is None."""
    if data is None:
        return ["data=synthetic", f"data.num_train={int(images)}"] + [
            override(f"data.{k}", v) for k, v in SYNTHETIC.items()
        ]
    return [
        "data=folder",
        override("data.train_images", data / "images"),
        override("data.train_masks", data / "masks"),
        "data.val_fraction=0",
    ]


def train_overrides(config: str, prompt_overrides: dict[str, Any]) -> list[str]:
    """Adapter and speed settings of one training configuration (``common.TRAIN_CONFIGS``)."""
    adapter = "frozen" if config.startswith("frozen") else config.split("_")[0]
    out = [f"adapter={adapter}"]
    if config == "frozen_recomputed":
        out.append("speed.embedding_cache=null")
    if config.startswith("lora_checkpointing"):
        out.append("speed.activation_checkpointing=true")
    if config == "lora_checkpointing_all":
        out.append("speed.checkpoint_prompt_steps=true")
    return out + [override(f"prompts.{k}", v) for k, v in prompt_overrides.items()]


def quiet_random_init() -> None:
    """Silence the warning that weights are random: here they are on purpose."""
    logging.getLogger("samtune.models.spec").setLevel(logging.ERROR)


def build_model(size: str, image_size: int) -> torch.nn.Module:
    """A random-init SAM 2.1 model from the ``model`` config group."""
    quiet_random_init()
    return instantiate(compose_config("train", model_overrides(size, image_size)).model).build()


def build_train_module(
    config: str,
    size: str,
    image_size: int,
    prompt_overrides: dict[str, Any],
    extra: Sequence[str] = (),
) -> tuple[DictConfig, SamTuneModule]:
    """The composed ``train`` config of one benchmark configuration and its LightningModule."""
    quiet_random_init()
    cfg = compose_config(
        "train",
        [*model_overrides(size, image_size), *train_overrides(config, prompt_overrides), *extra],
    )
    torch.manual_seed(int(cfg.seed))  # the same random weights in every configuration
    return cfg, build_module(cfg)


def load_samples(cfg: DictConfig, limit: int) -> tuple[SamDataModule, list[Sample]]:
    """The datamodule of ``cfg.data`` and the first ``limit`` samples of its train split, at
    their original resolution."""
    datamodule = instantiate(cfg.data)
    dataset = datamodule.raw_dataset("train")
    samples = [dataset[i] for i in range(min(limit, len(dataset)))]
    return datamodule, [s for s in samples if s is not None]


def training_batch(
    datamodule: SamDataModule, samples: list[Sample]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``samples`` through the datamodule's evaluation transform (resize and pad to the model's
    input, normalise; no augmentation) and its collate: ``B x 3 x S x S`` images, ``N_i x S x S``
    masks."""
    transform = datamodule.transform(train=False)
    batch = collate([transform(s) for s in samples])
    if batch is None:
        raise ValueError("no image left to benchmark after the transform")
    return batch["images"], batch["masks"]
