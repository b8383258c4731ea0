"""``ModelSpec``: what the Hydra ``model`` group instantiates."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from samtune.models.base_ref import build_random_init, state_digest
from samtune.models.build import build_sam2_model
from samtune.models.official import default_cache_dir, resolve_checkpoint
from samtune.models.registry import get_model_info
from samtune.models.state_dicts import CheckpointError
from samtune.validation import check_choice, check_image_size

log = logging.getLogger(__name__)

RANDOM_INIT_BANNER = (
    "\n" + "!" * 78 + "\n"
    "!! NO SAM 2.1 CHECKPOINT: {name} starts from RANDOM WEIGHTS.\n"
    "!! {reason}\n"
    "!! Numbers from this run say nothing about SAM 2.1's quality.\n"
    "!! To use the official weights put {file} in {cache} or pass model.checkpoint=PATH.\n"
    + "!"
    * 78
)


@dataclass
class ModelSpec:
    """Which SAM 2.1 model to build and where its weights come from.

    Attributes:
        name: registry name (``sam2.1_hiera_tiny``, ``_small``, ``_base_plus``, ``_large``).
        image_size: input resolution (1024 in SAM 2; smaller for CPU work and tests).
        checkpoint: a path, ``auto`` (cache, then official URL), or None for random init.
        on_missing: ``error`` (default) or ``random``: what to do when ``auto`` finds no file.
        cache_dir: cache for official checkpoints; None means ``$SAMTUNE_CACHE_DIR``, else
            ``~/.cache/samtune/checkpoints``.
        allow_download: whether ``auto`` may download.
        url: override of the official download URL.
        init_seed: seed of the random weights when there is no checkpoint (so a run's base
            weights can be rebuilt from the seed alone).
        init_digest: set by :meth:`build` for random weights: the digest
            (:func:`~samtune.models.base_ref.state_digest`) of the weights drawn from
            ``init_seed``, recorded with the seed so that a rebuild can be verified.
    """

    name: str = "sam2.1_hiera_tiny"
    image_size: int = 1024
    checkpoint: str | None = "auto"
    on_missing: str = "error"
    cache_dir: str | None = None
    allow_download: bool = True
    url: str | None = None
    init_seed: int = 0
    resolved_checkpoint: str | None = field(default=None, init=False)
    random_init: bool = field(default=False, init=False)
    init_digest: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        get_model_info(self.name)
        self.image_size = check_image_size("model.image_size", self.image_size)
        check_choice("model.on_missing", self.on_missing, ("error", "random"))

    def resolve(self) -> Path | None:
        """Find the checkpoint file (or None for random init), applying ``on_missing``."""
        try:
            path = resolve_checkpoint(
                self.name,
                self.checkpoint,
                cache_dir=self.cache_dir,
                allow_download=self.allow_download,
                url=self.url,
            )
            reason = "model.checkpoint=null was asked for."
        except CheckpointError as exc:
            if self.on_missing != "random" or str(self.checkpoint) != "auto":
                raise
            path, reason = None, f"{exc}"
        self.resolved_checkpoint = str(path) if path else None
        self.random_init = path is None
        if path is None:
            cache = self.cache_dir or default_cache_dir()
            log.warning(
                RANDOM_INIT_BANNER.format(
                    name=self.name,
                    reason=reason,
                    file=get_model_info(self.name).checkpoint_file,
                    cache=cache,
                )
            )
        return path

    def build(self) -> torch.nn.Module:
        """Resolve the checkpoint and build the model (eval mode, CPU)."""
        path = self.resolve()
        if path is None:
            model = build_random_init(self.name, image_size=self.image_size, seed=self.init_seed)
            self.init_digest = state_digest(model.state_dict())
            return model
        self.init_digest = None
        return build_sam2_model(self.name, image_size=self.image_size, checkpoint=path)

    @property
    def sam2_config(self) -> str:
        """The sam2 config name that ``build_sam2`` takes for this size."""
        return get_model_info(self.name).sam2_config
