"""What the command-line tools print: one line per message, no third-party noise.

Hydra configures the root logger (console and ``<job>.log``) before a task runs. Lightning adds a
second console handler of its own to the ``lightning`` logger at import time, so each of its
messages was printed twice (``INFO: ...`` and Hydra's ``[date][lightning...][INFO] ...``);
:func:`setup_console` removes Lightning's handlers and lets its records reach Hydra's.
Advertisements and known, harmless deprecation warnings of dependencies are dropped; every
other warning is kept.
"""

from __future__ import annotations

import logging
import re
import warnings

# Messages of dependencies that say nothing about the run (matched with ``re.search``).
NOISE_MESSAGES: tuple[str, ...] = (
    r"Tip: For seamless cloud",  # Lightning's litlogger / litmodels advertisements
    r"\blitlogger\b",
    r"\blitmodels\b",
    # sam2's SAM2ImagePredictor.set_image, three lines per image on the root logger
    r"^For numpy array image, we assume \(HxWxC\) format$",
    r"^Computing image embeddings for the provided image\.\.\.$",
    r"^Image embeddings computed\.$",
)
# (category, message regex) of deprecation warnings raised inside dependencies, not samtune.
NOISE_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    (Warning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),  # lightning vs new torch
    (FutureWarning, r"`torch\.jit\.script` is deprecated"),  # sam2's transforms
)
_LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")


class NoiseFilter(logging.Filter):
    """Drops log records whose message matches one of ``patterns``."""

    def __init__(self, patterns: tuple[str, ...] = NOISE_MESSAGES) -> None:
        super().__init__()
        self.pattern = re.compile("|".join(f"(?:{p})" for p in patterns))

    def filter(self, record: logging.LogRecord) -> bool:
        """False (drop) for a noise message."""
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to judge
            return True
        return self.pattern.search(message) is None


def filter_noise_warnings() -> None:
    """Ignore the known deprecation warnings of dependencies (others still show)."""
    for category, message in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


def setup_console() -> None:
    """Make every message print once, without dependencies' noise.

    Call it after Hydra (or ``logging.basicConfig``) configured the root logger. Lightning's own
    console handlers are removed and its loggers propagate to the root's handlers instead; each
    root handler gets a :class:`NoiseFilter`. Calling it again changes nothing.
    """
    import lightning  # noqa: F401  (its import attaches the handlers removed here)

    root = logging.getLogger()
    for name in _LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler and root.handlers:
                logger.removeHandler(handler)
        if root.handlers:
            logger.propagate = True
    for handler in root.handlers:
        if not any(isinstance(f, NoiseFilter) for f in handler.filters):
            handler.addFilter(NoiseFilter())
    filter_noise_warnings()
