"""Running a Hydra app next to sam2, which initialises Hydra's global state when imported."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from samtune.cli.console import filter_noise_warnings, setup_console
from samtune.data.sample import DataError

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


def model_size_arguments(argv: list[str]) -> list[str]:
    """``model.image_size=N`` for the apps whose ``model`` group is optional (predict, serve).

    Without ``model=<size>`` there is no ``model`` node for Hydra to override, so the argument is
    handed on as the app's own ``image_size=N``; with it, it stays and
    :func:`resolution_override` reads it.
    """
    if any(arg.startswith("model=") for arg in argv):
        return list(argv)
    return [
        "image_size=" + arg.split("=", 1)[1] if arg.startswith("model.image_size=") else arg
        for arg in argv
    ]


def resolution_override(cfg: DictConfig) -> int | None:
    """The resolution asked for on the command line (``model.image_size=N``, or its older
    spelling ``image_size=N``), or ``None`` for the one recorded with the weights.

    Raises:
        ValueError: both spellings are given with different values.
    """
    keys = command_line_keys()
    plain = cfg.get("image_size")
    model = cfg.get("model")
    from_model = (
        int(model.image_size)
        if model is not None and "model.image_size" in keys and model.get("image_size") is not None
        else None
    )
    if plain is not None and from_model is not None and int(plain) != from_model:
        raise ValueError(
            f"image_size={plain} and model.image_size={from_model} disagree: give the "
            "resolution once, as model.image_size=N"
        )
    if from_model is not None:
        return from_model
    return None if plain is None else int(plain)


def data_error_in(exc: BaseException) -> DataError | None:
    """The :class:`DataError` behind ``exc`` (itself, or a cause of Hydra's wrapping), if any."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, DataError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


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
        try:
            return task(cfg)
        except Exception as exc:
            bad_data = data_error_in(exc)
            if bad_data is None:
                raise
            # bad input is the user's to fix: its message, without Hydra's wrapping or a traceback
            label = getattr(bad_data, "label", "bad data")
            logging.getLogger("samtune").error("%s: %s", label, bad_data)
            raise SystemExit(1) from None

    hydra.main(config_path=str(CONFIG_DIR), config_name=config_name, version_base="1.3")(
        task_with_console
    )()
