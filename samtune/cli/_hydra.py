"""Running a Hydra app next to sam2, which initialises Hydra's global state when imported."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from samtune.cli.console import filter_noise_warnings, setup_console

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def clear_global_hydra() -> None:
    """Forget the Hydra state that ``import sam2`` set up, so a samtune Hydra app can start."""
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()


def command_line_keys() -> set[str]:
    """The config keys the user set on the command line of the running Hydra app.

    ``model.image_size=512`` gives ``model.image_size``; ``+x=1`` and ``~x`` give ``x``.
    Outside a Hydra app the set is empty.
    """
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return set()
    keys = set()
    for override in HydraConfig.get().overrides.task:
        key = override.split("=", 1)[0].lstrip("+~")
        keys.add(key.split("@", 1)[0])
    return keys


def run_hydra_app(task: Callable[[DictConfig], object], config_name: str) -> None:
    """Run ``task`` as an ``@hydra.main`` app on ``configs/<config_name>.yaml``.

    sam2 is imported first (so its Hydra initialisation happens now, not inside the app) and its
    global state is cleared; the model is built later from sam2's YAML without Hydra's globals.
    """
    import hydra

    filter_noise_warnings()
    import sam2  # noqa: F401

    if not CONFIG_DIR.is_dir():
        raise FileNotFoundError(
            f"samtune's configs folder {CONFIG_DIR} is missing: the package is incomplete, "
            "reinstall samtune"
        )
    clear_global_hydra()

    @functools.wraps(task)
    def task_with_console(cfg: DictConfig) -> object:
        setup_console()  # after Hydra configured logging
        return task(cfg)

    hydra.main(config_path=str(CONFIG_DIR), config_name=config_name, version_base="1.3")(
        task_with_console
    )()
