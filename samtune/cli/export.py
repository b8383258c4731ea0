"""``samtune-export ckpt=RUN/checkpoints/best.ckpt out=tuned.pt``: a tuned model as a SAM 2 checkpoint.

Writes ``{"model": state_dict}`` (LoRA merged, sam2's key names) that
``sam2.build_sam.build_sam2(config, out)`` loads, and ``<out without suffix>.json``.
"""

from __future__ import annotations

from omegaconf import DictConfig

from samtune.cli._hydra import run_hydra_app


def export_task(cfg: DictConfig) -> None:
    """Export ``cfg.ckpt`` to ``cfg.out`` and print where the files are."""
    from samtune.models.export import export_checkpoint, sidecar_path

    out = export_checkpoint(cfg.ckpt, cfg.out)
    print(f"exported {cfg.ckpt}\n  weights: {out}\n  sidecar: {sidecar_path(out)}")


def main() -> None:
    """Console entry point."""
    run_hydra_app(export_task, "export")


if __name__ == "__main__":
    main()
