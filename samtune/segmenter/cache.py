"""Embedding cache for a frozen image encoder: the encoder runs once per distinct input.

With ``adapter=frozen`` the image encoder's output depends only on the input pixels and the
frozen weights, so it can be computed once and reused in every epoch and every evaluation
protocol. An entry's key is a digest of everything the output depends on:

- the exact bytes, shape and dtype of the normalised input tensor (augmented pixels miss);
- a digest of the weights the cached part depends on (recomputed when a tensor changes);
- ``image_size``, the normalisation constants, the cache stage, the storage dtype, the
  compute device type and autocast dtype, and the torch and sam2 versions.

What is cached (the *stage*) depends on what trains. ``SAM2Base.forward_image`` ends with two
1x1 convolutions that belong to the mask decoder (``conv_s0``, ``conv_s1``); they train with a
frozen encoder. Then the cache keeps the image encoder's three FPN levels (``"neck"``, 256
channels each: ~44 MB per 1024 px image in bf16) and applies the convolutions, with gradients,
on every use. When those convolutions are frozen too, it keeps their outputs (``"features"``,
~8.4 MB per 1024 px image in bf16). ``no_mem_embed`` is always added after the cache.

Entries live in memory (least recently used first out) up to ``max_memory_mb``; what does not fit
spills to ``cache_dir`` as ``.npy`` files read back memory-mapped (bf16 stored as uint16), or is
dropped when there is no ``cache_dir``. Files on disk are reused by later runs whose key matches.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from samtune.segmenter.base import Features
from samtune.segmenter.sam2 import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    apply_decoder_convs,
    decoder_convs,
    encode_frozen,
    features_from_levels,
)

__all__ = ["CacheStats", "EmbeddingCache", "WeightDigest", "encode_frozen", "features_from_levels"]

log = logging.getLogger(__name__)

STAGES = ("auto", "neck", "features")
_STORAGE = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
# numpy has no bfloat16: its bits go to disk as uint16 (read back through int16, which torch has)
# (torch dtype to view as, its numpy twin, dtype of the file)
_DISK = {
    torch.bfloat16: (torch.int16, np.int16, np.uint16),
    torch.float16: (torch.float16, np.float16, np.float16),
    torch.float32: (torch.float32, np.float32, np.float32),
}


@dataclass
class CacheStats:
    """Counters of an :class:`EmbeddingCache`.

    Attributes:
        hits: images served from memory or disk.
        disk_hits: the part of ``hits`` read from disk.
        misses: images the encoder had to run on.
        memory_bytes: bytes held in memory now.
        memory_entries: entries held in memory now.
        spilled: entries moved from memory to disk.
        dropped: entries evicted with nowhere to go.
    """

    hits: int = 0
    disk_hits: int = 0
    misses: int = 0
    memory_bytes: int = 0
    memory_entries: int = 0
    spilled: int = 0
    dropped: int = 0

    @property
    def hit_rate(self) -> float:
        """Fraction of looked-up images that were hits (0 before any lookup)."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().to("cpu").contiguous()
    return t.reshape(-1).view(torch.uint8).numpy().tobytes()


class WeightDigest:
    """A digest of some tensors' values, recomputed only when one of them may have changed.

    Any in-place write (optimiser step, ``load_state_dict``) bumps a tensor's version counter,
    and replacing a tensor changes its storage; both make the next :meth:`of` hash again.
    """

    def __init__(self) -> None:
        self._fingerprint: tuple | None = None
        self._digest = ""

    def of(self, tensors: list[tuple[str, torch.Tensor]]) -> str:
        """Hex digest of the names, shapes, dtypes and values of ``tensors``."""
        fingerprint = tuple(
            (n, t.data_ptr(), t._version, tuple(t.shape), t.dtype, t.device) for n, t in tensors
        )
        if fingerprint != self._fingerprint:
            h = hashlib.blake2b(digest_size=16)
            for name, t in tensors:
                h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
                h.update(_tensor_bytes(t))
            self._digest, self._fingerprint = h.hexdigest(), fingerprint
        return self._digest


def _channels_last(t: torch.Tensor) -> bool:
    """Whether a C x H x W tensor is laid out H x W x C in memory (and C > 1)."""
    return t.dim() == 3 and t.shape[0] > 1 and t.stride(0) == 1 and not t.is_contiguous()


def _stack(entries: list[list[torch.Tensor]], level: int) -> torch.Tensor:
    parts = [e[level] for e in entries]
    fmt = torch.channels_last if _channels_last(parts[0]) else torch.contiguous_format
    return torch.stack(parts).contiguous(memory_format=fmt)


class EmbeddingCache:
    """Keeps image-encoder outputs of a frozen encoder in memory and, past a budget, on disk.

    Args:
        max_memory_mb: memory budget of the in-memory entries, in MiB.
        cache_dir: where entries that do not fit in memory go; None drops them instead.
        storage_dtype: ``bfloat16`` (default), ``float16`` or ``float32``. Features are rounded to
            it on a miss too, so a hit gives exactly what the miss gave; ``float32`` gives exactly
            the encoder's own output.
        stage: ``auto`` (default), ``neck`` or ``features``: what to cache (see the module doc).
            ``auto`` picks ``features`` when ``conv_s0``/``conv_s1`` are frozen, else ``neck``.

    Raises:
        ValueError: for an unknown ``storage_dtype`` or ``stage``, or a negative budget.
    """

    def __init__(
        self,
        *,
        max_memory_mb: float = 4096,
        cache_dir: str | os.PathLike | None = None,
        storage_dtype: str = "bfloat16",
        stage: str = "auto",
    ) -> None:
        if storage_dtype not in _STORAGE:
            raise ValueError(
                f"cache storage_dtype must be one of {sorted(_STORAGE)}, got {storage_dtype!r}"
            )
        if stage not in STAGES:
            raise ValueError(f"cache stage must be one of {STAGES}, got {stage!r}")
        if max_memory_mb < 0:
            raise ValueError(f"cache max_memory_mb must be >= 0, got {max_memory_mb}")
        self.max_memory_bytes = int(max_memory_mb * 2**20)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.storage_dtype = _STORAGE[storage_dtype]
        self.stage = stage
        self.stats = CacheStats()
        self._memory: OrderedDict[str, list[torch.Tensor]] = OrderedDict()
        self._digest = WeightDigest()

    # ------------------------------------------------------------------ keys
    def resolve_stage(self, model: torch.nn.Module) -> str:
        """The stage used for ``model``: ``neck`` or ``features``."""
        if self.stage != "auto":
            return self.stage
        convs = decoder_convs(model)
        trainable = any(p.requires_grad for m in convs for p in m.parameters())
        return "neck" if trainable else "features"

    def _cached_tensors(self, model: torch.nn.Module, stage: str) -> list[tuple[str, torch.Tensor]]:
        tensors = [(f"image_encoder.{n}", t) for n, t in model.image_encoder.state_dict().items()]
        if stage == "features":
            for i, conv in enumerate(decoder_convs(model)):
                tensors += [(f"conv_s{i}.{n}", t) for n, t in conv.state_dict().items()]
        return tensors

    def weights_digest(self, model: torch.nn.Module, stage: str | None = None) -> str:
        """Digest of the weights the cached part of ``model`` depends on."""
        stage = stage or self.resolve_stage(model)
        return self._digest.of(self._cached_tensors(model, stage))

    def _context(self, model: torch.nn.Module, images: torch.Tensor, stage: str) -> bytes:
        import sam2

        device = images.device.type
        autocast = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        parts = (
            self.weights_digest(model, stage),
            stage,
            int(model.image_size),
            IMAGENET_MEAN,
            IMAGENET_STD,
            str(self.storage_dtype),
            device,
            str(autocast),
            torch.__version__,
            getattr(sam2, "__version__", "?"),
            tuple(images.shape[1:]),
            str(images.dtype),
        )
        return repr(parts).encode()

    def keys(self, model: torch.nn.Module, images: torch.Tensor) -> list[str]:
        """One cache key per image of the normalised batch ``images`` (``B x 3 x S x S``)."""
        context = self._context(model, images, self.resolve_stage(model))
        keys = []
        for img in images:
            h = hashlib.blake2b(context, digest_size=20)
            h.update(_tensor_bytes(img))
            keys.append(h.hexdigest())
        return keys

    # ------------------------------------------------------------------ storage
    # An entry is one C x H x W tensor per level. Some FPN levels come out of the encoder
    # channels-last; entries keep that layout (in memory and on disk, where such a level is stored
    # H x W x C) so that a hit feeds the decoder the very same tensor as a recomputation.
    def _file(self, key: str, level: int, layout: str) -> Path:
        assert self.cache_dir is not None
        return self.cache_dir / key[:2] / f"{key}.{level}.{layout}.npy"

    def _find(self, key: str, level: int) -> Path | None:
        for layout in ("chw", "hwc"):
            path = self._file(key, level, layout)
            if path.is_file():
                return path
        return None

    def _get(self, key: str) -> list[torch.Tensor] | None:
        entry = self._memory.get(key)
        if entry is not None:
            self._memory.move_to_end(key)
            return entry
        if self.cache_dir is None or self._find(key, 0) is None:
            return None
        entry, level = [], 0
        while (path := self._find(key, level)) is not None:
            arr = np.array(np.load(path, mmap_mode="r")).view(_DISK[self.storage_dtype][1])
            t = torch.from_numpy(arr).view(self.storage_dtype)
            entry.append(t.permute(2, 0, 1) if path.name.endswith(".hwc.npy") else t)
            level += 1
        self.stats.disk_hits += 1
        return entry

    def _put(self, key: str, entry: list[torch.Tensor]) -> None:
        self._memory[key] = entry
        self._memory.move_to_end(key)
        self.stats.memory_bytes += sum(t.numel() * t.element_size() for t in entry)
        while self.stats.memory_bytes > self.max_memory_bytes and self._memory:
            old_key, old = self._memory.popitem(last=False)
            self.stats.memory_bytes -= sum(t.numel() * t.element_size() for t in old)
            if self.cache_dir is not None:
                self._write(old_key, old)
                self.stats.spilled += 1
            else:
                self.stats.dropped += 1
        self.stats.memory_entries = len(self._memory)

    def _write(self, key: str, entry: list[torch.Tensor]) -> None:
        torch_view, _, file_dtype = _DISK[self.storage_dtype]
        for level in reversed(range(len(entry))):  # level 0 last: its file marks a complete entry
            t = entry[level]
            layout = "hwc" if _channels_last(t) else "chw"
            path = self._file(key, level, layout)
            if path.is_file():
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            physical = t.permute(1, 2, 0) if layout == "hwc" else t
            arr = physical.contiguous().view(torch_view).numpy().view(file_dtype)
            with open(tmp, "wb") as f:
                np.save(f, arr)
            os.replace(tmp, path)

    def clear(self) -> None:
        """Forget the in-memory entries (files on disk stay) and reset the counters."""
        self._memory.clear()
        self.stats = CacheStats()

    # ------------------------------------------------------------------ encoding
    def _run_encoder(self, model: torch.nn.Module, images: torch.Tensor, stage: str):
        was_training = model.image_encoder.training
        model.image_encoder.eval()  # deterministic output: no stochastic depth
        try:
            with torch.no_grad():
                levels = model.image_encoder(images)["backbone_fpn"]
                if stage == "features":
                    levels = apply_decoder_convs(model, levels)
        finally:
            model.image_encoder.train(was_training)
        return [f.to("cpu", self.storage_dtype) for f in levels]

    def encode(self, model: torch.nn.Module, images: torch.Tensor) -> Features:
        """Features of the normalised ``images``, like :func:`samtune.segmenter.sam2.encode`.

        Runs the image encoder only on the images that miss. Gradients flow into ``conv_s0``,
        ``conv_s1`` and ``no_mem_embed`` as usual, never into the image encoder.

        Raises:
            ValueError: when the image encoder has parameters that require gradients.
        """
        return features_from_levels(model, self.levels(model, images))

    def levels(self, model: torch.nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
        """The FPN levels of ``forward_image`` (``conv_s0``/``conv_s1`` applied, with their
        gradients) for the normalised ``images``, from the cache where it has them.

        Runs the image encoder only on the images that miss. Gradients flow into ``conv_s0``,
        ``conv_s1`` and ``no_mem_embed`` as usual, never into the image encoder.

        Raises:
            ValueError: when the image encoder has parameters that require gradients.
        """
        trainable = [n for n, p in model.image_encoder.named_parameters() if p.requires_grad]
        if trainable:
            raise ValueError(
                f"the embedding cache needs a frozen image encoder (adapter=frozen), but "
                f"{len(trainable)} image_encoder parameters require gradients, e.g. {trainable[0]}"
            )
        stage = self.resolve_stage(model)
        keys = self.keys(model, images)
        entries = [self._get(k) for k in keys]
        missing = [i for i, e in enumerate(entries) if e is None]
        self.stats.hits += len(keys) - len(missing)
        self.stats.misses += len(missing)
        if missing:
            computed = self._run_encoder(model, images[missing], stage)
            for j, i in enumerate(missing):
                entries[i] = [f[j].clone() for f in computed]
        for k, e in zip(keys, entries):
            if k not in self._memory:
                self._put(k, e)
        dtype = images.dtype if images.is_floating_point() else torch.float32
        levels = [
            _stack(entries, level).to(images.device, dtype, non_blocking=True)
            for level in range(len(entries[0]))
        ]
        if stage == "neck":
            levels = apply_decoder_convs(model, levels)
        return levels
