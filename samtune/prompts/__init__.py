"""Prompt simulation: SAM 2's training prompts (box or click, then correction clicks)."""

from __future__ import annotations

from samtune.prompts.sampling import jitter_boxes, mask_to_box, sample_pixels
from samtune.prompts.simulator import Prompts, PromptSimulator
from samtune.prompts.streams import PromptStreams, keyed_generator

__all__ = [
    "PromptSimulator",
    "PromptStreams",
    "Prompts",
    "keyed_generator",
    "jitter_boxes",
    "mask_to_box",
    "sample_pixels",
]
