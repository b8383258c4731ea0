"""`make demo`: fine-tune SAM 2.1 hiera_tiny on the bundled nuclei images, evaluate, say where it all is."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    env = dict(os.environ)
    env.setdefault("WANDB_MODE", "offline")
    env.setdefault("WANDB_SILENT", "true")
    start = time.time()
    cmd = [sys.executable, "-m", "samtune.cli.train", "experiment=demo", *sys.argv[1:]]
    print("$", " ".join(cmd), flush=True)
    code = subprocess.call(cmd, cwd=REPO, env=env)
    what = "finished" if code == 0 else "stopped"
    print(f"demo {what} after {time.time() - start:.0f} s (exit code {code})", flush=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
