"""The SAM 2.1 model sizes samtune knows: sam2 config, checkpoint file and URL."""

from __future__ import annotations

from dataclasses import dataclass

OFFICIAL_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"


@dataclass(frozen=True)
class ModelInfo:
    """One official SAM 2.1 size.

    Attributes:
        name: samtune's name, also the Hydra ``model=`` choice.
        sam2_config: config path inside the installed ``sam2`` package, as ``build_sam2`` takes it.
        checkpoint_file: file name of the official checkpoint.
        embed_dim: Hiera trunk width, used to recognise a checkpoint's size.
        num_blocks: number of Hiera blocks, used to recognise a checkpoint's size.
    """

    name: str
    sam2_config: str
    checkpoint_file: str
    embed_dim: int
    num_blocks: int

    @property
    def url(self) -> str:
        """Official download URL of the checkpoint."""
        return f"{OFFICIAL_BASE_URL}/{self.checkpoint_file}"


MODELS: dict[str, ModelInfo] = {
    info.name: info
    for info in (
        ModelInfo(
            "sam2.1_hiera_tiny",
            "configs/sam2.1/sam2.1_hiera_t.yaml",
            "sam2.1_hiera_tiny.pt",
            96,
            12,
        ),
        ModelInfo(
            "sam2.1_hiera_small",
            "configs/sam2.1/sam2.1_hiera_s.yaml",
            "sam2.1_hiera_small.pt",
            96,
            16,
        ),
        ModelInfo(
            "sam2.1_hiera_base_plus",
            "configs/sam2.1/sam2.1_hiera_b+.yaml",
            "sam2.1_hiera_base_plus.pt",
            112,
            24,
        ),
        ModelInfo(
            "sam2.1_hiera_large",
            "configs/sam2.1/sam2.1_hiera_l.yaml",
            "sam2.1_hiera_large.pt",
            144,
            48,
        ),
    )
}


def get_model_info(name: str) -> ModelInfo:
    """Return the registry entry for ``name`` (e.g. ``sam2.1_hiera_tiny``).

    Raises:
        KeyError: with the list of known names, if ``name`` is unknown.
    """
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown SAM 2.1 model {name!r}; known: {', '.join(MODELS)}") from None


def guess_size_from_state_dict(state_dict: dict) -> str | None:
    """Name the registry size whose Hiera trunk matches ``state_dict``, or None if none does."""
    w = state_dict.get("image_encoder.trunk.patch_embed.proj.weight")
    if w is None:
        return None
    embed_dim = int(w.shape[0])
    blocks = {
        int(k.split(".")[3]) for k in state_dict if k.startswith("image_encoder.trunk.blocks.")
    }
    num_blocks = max(blocks) + 1 if blocks else 0
    for info in MODELS.values():
        if info.embed_dim == embed_dim and info.num_blocks == num_blocks:
            return info.name
    return None
