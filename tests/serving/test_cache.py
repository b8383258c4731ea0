"""The embedding cache: LRU within a byte budget, one computation per key under concurrency."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from samtune.serving.cache import Embedding, EmbeddingCache, tensor_bytes


def emb(nbytes: int) -> Embedding:
    features = {"image_embed": torch.zeros(nbytes // 4), "high_res_feats": []}
    return Embedding(features=features, orig_hw=(4, 4), nbytes=tensor_bytes(features))


def test_least_recently_used_leave_first_within_the_byte_budget():
    cache = EmbeddingCache(max_bytes=1000)
    for key in "abc":
        cache.put(("m", key), emb(400))  # 3 x 400 > 1000: "a" leaves
    assert ("m", "a") not in cache and len(cache) == 2 and cache.bytes == 800
    assert cache.get(("m", "b")) is not None  # "b" is now the most recent
    cache.put(("m", "d"), emb(400))
    assert ("m", "c") not in cache and ("m", "b") in cache and ("m", "d") in cache
    cache.put(("m", "huge"), emb(2000))  # larger than the budget: returned by callers, not kept
    assert ("m", "huge") not in cache and cache.bytes == 800
    cache.put(("other-model", "b"), emb(100))  # keys are per model
    assert cache.get(("other-model", "b")).nbytes == 100 and cache.get(("m", "b")).nbytes == 400
    stats = cache.stats()
    assert stats["evictions"] == 2 and stats["bytes"] <= stats["max_bytes"] == 1000


def test_one_computation_per_key_under_concurrency():
    cache = EmbeddingCache(max_bytes=10_000)
    calls = []

    def compute() -> Embedding:
        calls.append(1)
        time.sleep(0.2)
        return emb(100)

    results: list = [None] * 8

    def worker(i: int) -> None:
        results[i] = cache.get_or_compute(("m", "img"), compute)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(calls) == 1
    assert sum(1 for _, cached in results if not cached) == 1
    assert len({id(value) for value, _ in results}) == 1


def test_a_failed_computation_is_not_cached_and_waiters_retry():
    cache = EmbeddingCache(max_bytes=10_000)
    with pytest.raises(RuntimeError):
        cache.get_or_compute(("m", "x"), lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    value, cached = cache.get_or_compute(("m", "x"), lambda: emb(40))
    assert not cached and value.nbytes == 40 and len(cache) == 1


def test_statistics_count_each_miss_once():
    cache = EmbeddingCache(max_bytes=10_000)
    assert cache.get(("m", "a"), count_miss=False) is None
    cache.get_or_compute(("m", "a"), lambda: emb(40))
    cache.get_or_compute(("m", "a"), lambda: emb(40))
    assert (cache.stats()["misses"], cache.stats()["hits"]) == (1, 1)
