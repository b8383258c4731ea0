"""Running a Hydra app next to sam2, which initialises Hydra's global state when imported."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def clear_global_hydra() -> None:
    """Forget the Hydra state that ``import sam2`` set up, so a samtune Hydra app can start."""
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()


def run_hydra_app(task: Callable[[DictConfig], object], config_name: str) -> None:
    """Run ``task`` as an ``@hydra.main`` app on ``configs/<config_name>.yaml``.

    sam2 is imported first (so its Hydra initialisation happens now, not inside the app) and its
    global state is cleared; the model is built later from sam2's YAML without Hydra's globals.
    """
    import hydra

    from samtune.cli.console import filter_noise_warnings, setup_console

    filter_noise_warnings()
    import sam2  # noqa: F401

    if not CONFIG_DIR.is_dir():
        raise FileNotFoundError(
            f"samtune's configs folder {CONFIG_DIR} is missing: install samtune from its source "
            "checkout (pip install -e .)"
        )
    clear_global_hydra()

    @functools.wraps(task)
    def task_with_console(cfg: DictConfig) -> object:
        setup_console()  # after Hydra configured logging
        return task(cfg)

    hydra.main(config_path=str(CONFIG_DIR), config_name=config_name, version_base="1.3")(
        task_with_console
    )()
