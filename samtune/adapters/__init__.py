"""Adapters: which parts of SAM 2 train (frozen encoder, LoRA, full) and merging for export."""

from samtune.adapters.base import Adapter, lora_modules, part_of
from samtune.adapters.frozen import FrozenEncoder
from samtune.adapters.full import FullFineTune
from samtune.adapters.lora import ATTENTION_TARGET, MLP_TARGET, LoRAAdapter

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
