"""The promptable model without Lightning: the :class:`~samtune.segmenter.base.Segmenter`
interface, SAM 2.1's implementation of it, the embedding cache, activation checkpointing and
FLOP counting."""
