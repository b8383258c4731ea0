"""``samtune-serve model=sam2.1_hiera_tiny ckpt=tuned_tiny.pt port=9001``: Roboflow's SAM 2 API.

Serves one model (``ckpt``: a Lightning ``.ckpt``, an exported ``.pt``, a folder from
``samtune-export format=roboflow``, or ``none`` with ``model=<size>``) or several
(``models={hiera_tiny: {ckpt: a.pt}, hiera_large: {ckpt: b.pt}}``) under their
``sam2_version_id``; see :mod:`samtune.serving`.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from samtune.cli._hydra import model_size_arguments, resolution_override, run_hydra_app
from samtune.serving.run import serve


def serve_task(cfg: DictConfig) -> None:
    """Load the models and serve them until interrupted.

    ``model.image_size=N`` on the command line serves a file at ``N`` px (a resolution given on
    the command line beats the one recorded with the weights; ``image_size=N`` is the same key).
    """
    config = OmegaConf.to_container(cfg, resolve=True)
    config["image_size"] = resolution_override(cfg)
    serve(config)


def main() -> None:
    """Console entry point; ``model.image_size=N`` works with or without ``model=<size>``."""
    import sys

    sys.argv = model_size_arguments(sys.argv)
    run_hydra_app(serve_task, "serve")


if __name__ == "__main__":
    main()
