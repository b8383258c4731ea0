"""Config values are checked where they are read; each message names the key and the value."""

from __future__ import annotations

import re

import pytest

from samtune.validation import (
    ConfigValueError,
    check_choice,
    check_image_size,
    check_number,
    check_probability,
)
from tests.helpers import REPO

CONFIGS = REPO / "samtune" / "configs"


def test_helper_messages():
    cases = [
        (lambda: check_number("optim.lr", -0.001, gt=0), "optim.lr must be > 0, got -0.001"),
        (lambda: check_number("a.b", 1.0, ge=0, lt=1), "a.b must be in [0, 1), got 1.0"),
        (
            lambda: check_number("a.n", 2.5, ge=1, integer=True),
            "a.n must be an integer >= 1, got 2.5",
        ),
        (lambda: check_number("a.n", True, ge=1), "a.n must be a number >= 1, got True"),
        (lambda: check_number("a.x", float("nan"), ge=0), "a.x must be a number >= 0, got nan"),
        (lambda: check_number("a.x", "fast", gt=0), "a.x must be a number > 0, got 'fast'"),
        (
            lambda: check_number("a.k", 0, ge=1, integer=True, none_ok=True, also="'auto'"),
            "a.k must be null or 'auto' or an integer >= 1, got 0",
        ),
        (lambda: check_probability("p.q", -0.1), "p.q must be a probability in [0, 1], got -0.1"),
        (lambda: check_image_size("m.s", 48), "m.s must be a positive multiple of 32, got 48"),
        (lambda: check_image_size("m.s", 0), "m.s must be a positive multiple of 32, got 0"),
        (lambda: check_choice("d.e", "x", ("a", "b")), "d.e must be one of 'a', 'b', got 'x'"),
    ]
    for call, message in cases:
        with pytest.raises(ConfigValueError, match=f"^{re.escape(message)}$"):
            call()
    assert check_number("optim.lr", "1e-4", gt=0) == pytest.approx(1e-4)
    assert check_number("a.n", 3.0, ge=1, integer=True) == 3
    assert check_number("a.k", None, ge=1, none_ok=True) is None
    assert check_image_size("m.s", 32) == 32


def _classes():
    from samtune.data.datamodules.folder import FolderDataModule
    from samtune.data.datamodules.synthetic import SyntheticDataModule
    from samtune.evaluation import Evaluator
    from samtune.models import ModelSpec
    from samtune.models.adapters import LoRAAdapter
    from samtune.prompts import PromptSimulator
    from samtune.training.loss import SAM2Loss
    from samtune.training.optim import OptimConfig

    return [
        (lambda: OptimConfig(lr=-0.001), "optim.lr must be > 0, got -0.001"),
        (lambda: OptimConfig(weight_decay=-1), "optim.weight_decay must be >= 0, got -1"),
        (lambda: OptimConfig(betas=[0.9, 1.0]), "optim.betas[1] must be in [0, 1), got 1.0"),
        (lambda: PromptSimulator(box_prob=1.5), "prompts.box_prob must be a probability"),
        (lambda: PromptSimulator(correction_clicks=-1), "prompts.correction_clicks must be an"),
        (lambda: SAM2Loss(dice_weight=-1), "loss.dice_weight must be >= 0, got -1"),
        (lambda: ModelSpec(image_size=100), "model.image_size must be a positive multiple of 32"),
        (lambda: LoRAAdapter(rank=0), "adapter.rank must be an integer >= 1, got 0"),
        (lambda: SyntheticDataModule(image_size=64, batch_size=0), "data.batch_size must be an"),
        (
            lambda: SyntheticDataModule(image_size=64, min_object_area=-1),
            "data.min_object_area must be an integer >= 0, got -1",
        ),
        (
            lambda: FolderDataModule(
                train_images="i", train_masks="m", image_size=64, val_fraction=1
            ),
            "data.val_fraction must be in [0, 1), got 1",
        ),
        (lambda: Evaluator(max_clicks=0), "evaluation.max_clicks must be an integer >= 1, got 0"),
        (lambda: Evaluator(noc_thresholds=[0.85, 1.5]), "evaluation.noc_thresholds[1] must be"),
    ]


def test_each_class_checks_its_values_with_key_and_value():
    for call, start in _classes():
        with pytest.raises(ConfigValueError) as err:
            call()
        assert str(err.value).startswith(start), (str(err.value), start)


def test_negative_lr_from_the_command_line_stops_before_training():
    from hydra import compose, initialize_config_dir
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=smoke", "optim.lr=-0.001"])
    with pytest.raises(InstantiationException, match=r"optim\.lr must be > 0, got -0\.001"):
        instantiate(cfg.optim)
