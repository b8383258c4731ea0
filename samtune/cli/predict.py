"""``samtune-predict ckpt=X images=DIR prompts=prompts.json out=DIR [mode=prompts|auto] [multimask=false]``,
or ``samtune-predict ckpt=X video=DIR_OR_VOLUME prompts=prompts.json out=DIR`` for clips.

The prompts file formats are described in :mod:`samtune.inference.prompt_files` (images) and
:mod:`samtune.inference.clip_prompts` (videos and volumes). ``ckpt`` is a Lightning ``.ckpt``,
an exported ``.pt``, or ``none`` with ``model=<size>`` for zero-shot SAM 2.1.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from samtune.cli._hydra import model_size_arguments, resolution_override, run_hydra_app
from samtune.devices import resolve_device
from samtune.inference.folder import run_predict
from samtune.inference.video import run_predict_video


def predict_task(cfg: DictConfig) -> None:
    """Check the prompts, load the model, write masks and ``masks.json`` to ``cfg.out``."""
    from hydra.utils import instantiate

    spec = instantiate(cfg.model) if cfg.get("model") is not None else None
    device = resolve_device(cfg.get("device"))
    image_size = resolution_override(cfg)
    if (cfg.get("images") is None) == (cfg.get("video") is None):
        raise ValueError(
            "samtune-predict needs one of images=<folder of images> or video=<folder of frames "
            "or a volume>"
        )
    if cfg.get("video") is not None:
        if cfg.get("prompts_file") is None:
            raise ValueError("video= needs prompts=<file.json> naming the frame and its objects")
        path = run_predict_video(
            ckpt=cfg.ckpt,
            video=cfg.video,
            prompts=cfg.prompts_file,
            out=cfg.out,
            axis=cfg.axis,
            window=_plain(cfg.get("window")),
            normalize=_plain(cfg.get("normalize")),
            image_size=image_size,
            device=device,
            spec=spec,
        )
        print(f"wrote {path}")
        return
    path = run_predict(
        ckpt=cfg.ckpt,
        images=cfg.images,
        out=cfg.out,
        prompts=cfg.get("prompts_file"),
        mode=cfg.mode,
        multimask=cfg.multimask,
        image_size=image_size,
        device=device,
        spec=spec,
        auto=OmegaConf.to_container(cfg.auto, resolve=True) if cfg.get("auto") else None,
    )
    print(f"wrote {path}")


def _plain(value: object) -> object:
    """A Hydra mapping (a window given as ``{level: 40, width: 400}``) as a plain dict."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def main() -> None:
    """Console entry point.

    ``prompts`` is also the name of the training config group that simulates prompts, so Hydra
    would read ``prompts=FILE`` as a choice in that group; the entry point hands it on as
    ``prompts_file=FILE`` (either spelling works on the command line). ``model.image_size=N``
    works with or without ``model=<size>`` (see :func:`model_size_arguments`).
    """
    import sys

    sys.argv = model_size_arguments(
        [
            "prompts_file=" + arg.split("=", 1)[1] if arg.startswith("prompts=") else arg
            for arg in sys.argv
        ]
    )
    run_hydra_app(predict_task, "predict")


if __name__ == "__main__":
    main()
