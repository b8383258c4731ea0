"""``samtune-serve model=sam2.1_hiera_tiny ckpt=tuned_tiny.pt port=9001``: Roboflow's SAM 2 API.

Serves one model (``ckpt``: a Lightning ``.ckpt``, an exported ``.pt``, a folder from
``samtune-export format=roboflow``, or ``none`` with ``model=<size>``) or several
(``models={hiera_tiny: {ckpt: a.pt}, hiera_large: {ckpt: b.pt}}``) under their
``sam2_version_id``; see :mod:`samtune.serving`.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from samtune.cli._hydra import run_hydra_app


def serve_task(cfg: DictConfig) -> None:
    """Load the models and serve them until interrupted."""
    from samtune.serving.run import serve

    serve(OmegaConf.to_container(cfg, resolve=True))


def main() -> None:
    """Console entry point."""
    run_hydra_app(serve_task, "serve")


if __name__ == "__main__":
    main()
