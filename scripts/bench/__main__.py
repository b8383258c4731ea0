"""``python -m scripts.bench`` (from the repository root) or ``python scripts/bench``."""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a folder: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.bench.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
