"""Command-line entry points: thin wrappers that compose a Hydra config, instantiate and call."""
