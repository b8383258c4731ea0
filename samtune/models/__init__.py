"""SAM 2.1 model sizes, building and checkpoint loading."""

from samtune.models.build import build_sam2_model, load_checkpoint_strict
from samtune.models.official import resolve_checkpoint
from samtune.models.registry import MODELS, ModelInfo, get_model_info, guess_size_from_state_dict
from samtune.models.spec import ModelSpec
from samtune.models.state_dicts import CheckpointError, read_state_dict

__all__ = [
    "MODELS",
    "CheckpointError",
    "ModelInfo",
    "ModelSpec",
    "build_sam2_model",
    "get_model_info",
    "guess_size_from_state_dict",
    "load_checkpoint_strict",
    "read_state_dict",
    "resolve_checkpoint",
]
