"""scripts/bench_serving.py runs end to end (a seconds-long run; slow: it starts the server)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import REPO


@pytest.mark.slow
def test_bench_serving_small_run(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "bench_serving.py"),
            "--image-size",
            "128",
            "--repeats",
            "3",
            "--embed-repeats",
            "1",
            "--clients",
            "1,2",
            "--per-client",
            "2",
            "--max-seconds",
            "30",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["masks_equal_in_process"] is True
    assert {
        "segment_cached_in_process",
        "segment_cached_http_rle",
        "embed_segment_http_rle",
    } <= set(results["latency"])
    assert [row["clients"] for row in results["throughput"]] == [1, 2]
    assert all(row["errors"] == 0 and row["requests"] > 0 for row in results["throughput"])
    assert "| call |" in proc.stdout
