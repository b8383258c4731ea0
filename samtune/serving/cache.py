"""An LRU cache of image embeddings, bounded in bytes, that encodes each image once."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Embedding:
    """What ``SAM2ImagePredictor.set_image`` computes for one image.

    Attributes:
        features: the predictor's ``_features`` (``image_embed``, ``high_res_feats``).
        orig_hw: the image's ``(height, width)``.
        nbytes: memory held by the feature tensors.
    """

    features: dict[str, Any]
    orig_hw: tuple[int, int]
    nbytes: int


def tensor_bytes(value: Any) -> int:
    """Bytes held by the tensors in ``value`` (nested dicts, lists and tuples)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(tensor_bytes(v) for v in value)
    return 0


class EmbeddingCache:
    """Embeddings keyed by ``(model version, image_id)``; least recently used leave first.

    Thread-safe. :meth:`get_or_compute` lets one caller encode an image while concurrent
    callers for the same key wait for its result instead of encoding it again.

    Args:
        max_bytes: the budget; an embedding larger than it is returned but not kept.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"cache max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[Hashable, Embedding] = OrderedDict()
        self._pending: dict[Hashable, threading.Event] = {}
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def get(self, key: Hashable, *, count_miss: bool = True) -> Embedding | None:
        """The cached embedding (now the most recently used), or None.

        ``count_miss=False`` leaves a miss out of the statistics (a look before
        :meth:`get_or_compute`, which counts it).
        """
        with self._lock:
            return self._get(key, count_miss=count_miss)

    def put(self, key: Hashable, value: Embedding) -> None:
        """Keep ``value`` under ``key``, evicting the least recently used to stay in budget."""
        with self._lock:
            self._put(key, value)

    def get_or_compute(
        self, key: Hashable, compute: Callable[[], Embedding], *, wait_s: float = 600.0
    ) -> tuple[Embedding, bool]:
        """The embedding of ``key``, computed by ``compute`` if nobody has it or is making it.

        Returns:
            The embedding and whether it came from the cache (or from a concurrent caller).
        """
        while True:
            with self._lock:
                found = self._get(key)
                if found is not None:
                    return found, True
                event = self._pending.get(key)
                owner = event is None
                if owner:
                    event = self._pending[key] = threading.Event()
            if not owner:
                if not event.wait(wait_s):
                    raise TimeoutError(f"waited {wait_s} s for the embedding of {key}")
                continue  # the owner stored it (a hit next time) or failed (we try ourselves)
            try:
                value = compute()
                with self._lock:
                    self._put(key, value)
                return value, False
            finally:
                with self._lock:
                    self._pending.pop(key, None)
                event.set()

    def stats(self) -> dict[str, int]:
        """Entries, bytes, budget, hits, misses and evictions so far."""
        with self._lock:
            return {
                "entries": len(self._items),
                "bytes": self.bytes,
                "max_bytes": self.max_bytes,
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
            }

    def _get(self, key: Hashable, *, count_miss: bool = True) -> Embedding | None:
        value = self._items.get(key)
        if value is None:
            self.misses += int(count_miss)
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return value

    def _put(self, key: Hashable, value: Embedding) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= old.nbytes
        if value.nbytes > self.max_bytes:
            log.warning(
                "embedding of %s (%d bytes) is larger than the cache (%d bytes): not kept",
                key,
                value.nbytes,
                self.max_bytes,
            )
            return
        self._items[key] = value
        self.bytes += value.nbytes
        while self.bytes > self.max_bytes:
            _, evicted = self._items.popitem(last=False)
            self.bytes -= evicted.nbytes
            self.evictions += 1
