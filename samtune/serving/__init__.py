"""An HTTP server with Roboflow's SAM 2 routes, for samtune's tuned models (``samtune-serve``)."""

from samtune.serving.app import Server, create_app
from samtune.serving.cache import Embedding, EmbeddingCache
from samtune.serving.errors import ApiError
from samtune.serving.model import VERSION_IDS, ServedModel
from samtune.serving.security import KeyCheck, Limits

__all__ = [
    "VERSION_IDS",
    "ApiError",
    "Embedding",
    "EmbeddingCache",
    "KeyCheck",
    "Limits",
    "ServedModel",
    "Server",
    "create_app",
]
