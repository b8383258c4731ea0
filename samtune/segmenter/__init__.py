"""The promptable model without Lightning: SAM 2.1's encode/decode halves, the embedding cache,
activation checkpointing and FLOP counting."""
