"""samtune: fine-tune and evaluate Segment Anything 2.1 for domain adaptation."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "load_predictor", "load_video_predictor"]


def load_predictor(path: str, **kwargs: Any):
    """Load a tuned model as an official ``SAM2ImagePredictor`` (see :mod:`samtune.inference.predictor`)."""
    # deferred on purpose: ``import samtune`` stays light (no torch, sam2 or Lightning)
    from samtune.inference.predictor import load_predictor as _load

    return _load(path, **kwargs)


def load_video_predictor(path: str, **kwargs: Any):
    """Load a tuned model as an official ``SAM2VideoPredictor`` (see :mod:`samtune.inference.predictor`)."""
    # deferred on purpose, as above
    from samtune.inference.predictor import load_video_predictor as _load

    return _load(path, **kwargs)
