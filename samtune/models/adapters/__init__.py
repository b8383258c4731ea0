"""Adapters: which parts of SAM 2 train (frozen encoder, LoRA, full) and merging for export."""

from samtune.models.adapters.base import Adapter, lora_modules, part_of
from samtune.models.adapters.frozen import FrozenEncoder
from samtune.models.adapters.full import FullFineTune
from samtune.models.adapters.lora import ATTENTION_TARGET, MLP_TARGET, LoRAAdapter

__all__ = [
    "ATTENTION_TARGET",
    "MLP_TARGET",
    "Adapter",
    "FrozenEncoder",
    "FullFineTune",
    "LoRAAdapter",
    "lora_modules",
    "part_of",
]
