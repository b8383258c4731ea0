"""``samtune-export ckpt=RUN/checkpoints/best.ckpt out=tuned.pt``: a tuned model as a SAM 2 checkpoint.

``format=roboflow out=FOLDER`` writes a model package for Roboflow's local runtime instead
(``model.pt`` and ``sam_configuration.json``).

Writes ``{"model": state_dict}`` (LoRA merged, sam2's key names) that
``sam2.build_sam.build_sam2(config, out)`` loads, and ``<out without suffix>.json``.
"""

from __future__ import annotations

from omegaconf import DictConfig

from samtune.cli._hydra import run_hydra_app


def export_task(cfg: DictConfig) -> None:
    """Export ``cfg.ckpt`` to ``cfg.out`` (``format=samtune`` or ``roboflow``) and print the files."""
    from samtune.models.export import (
        ROBOFLOW_CONFIG,
        export_checkpoint,
        export_roboflow,
        sidecar_path,
    )

    fmt = str(cfg.get("format", "samtune")).lower()
    if fmt == "roboflow":
        folder = export_roboflow(cfg.ckpt, cfg.out)
        print(
            f"exported {cfg.ckpt} for Roboflow's runtime\n  folder: {folder}\n"
            f"  weights: {folder / 'model.pt'}\n  config: {folder / ROBOFLOW_CONFIG}"
        )
        return
    if fmt != "samtune":
        raise ValueError(f"export format must be 'samtune' or 'roboflow', got {cfg.format!r}")
    out = export_checkpoint(cfg.ckpt, cfg.out)
    print(f"exported {cfg.ckpt}\n  weights: {out}\n  sidecar: {sidecar_path(out)}")


def main() -> None:
    """Console entry point."""
    run_hydra_app(export_task, "export")


if __name__ == "__main__":
    main()
