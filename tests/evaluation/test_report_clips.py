"""``samtune-report`` on clip results: J, F, J&F per protocol (and per round of clicks), zero-shot
next to tuned, and J by distance from the prompt frame, from generated results.json files."""

from __future__ import annotations

import csv

import pytest

from samtune.cli.report import main
from samtune.evaluation.clips import (
    ObjectTrack,
    summarize_clips,
    summarize_rounds,
    write_clip_results,
)
from samtune.evaluation.report.clips import j_by_offset
from samtune.evaluation.report.compare import gather


def track(object_id, prompt_frame, frames, j, f, rounds=()):
    t = ObjectTrack(object_id=object_id, prompt_frame=prompt_frame, frames=frames, j=j, f=f)
    t.rounds = list(rounds)
    t.clicks = [[r, frames[0], 1.0, 2.0, int(r == 0)] for r in range(len(rounds))]
    return t


def write_run(folder, shift, summary):
    mask = {
        "a": [track(1, 0, [1, 2, 3], [0.9 - shift, 0.8 - shift, 0.6 - shift], [0.5, 0.5, 0.5])],
        "b": [
            track(1, 0, [1, 2], [0.7 - shift, 0.5 - shift], [0.4, 0.4]),
            track(2, 2, [3], [0.3 - shift], [0.2]),
        ],
    }
    rounds = {
        "a": [
            [track(1, 0, [1], [0.2 - shift], [0.1])],
            [
                track(
                    1, 0, [1], [0.6 - shift], [0.3], rounds=[(0.2 - shift, 0.1), (0.6 - shift, 0.3)]
                )
            ],
        ]
    }
    protocols = {
        "propagate_mask": summarize_clips(mask),
        "propagate_clicks": summarize_rounds(rounds),
    }
    versions = {"propagate_mask": 1, "propagate_clicks": 1}
    return write_clip_results(protocols, versions, summary, folder)


ZERO = {"model": "sam2.1_hiera_tiny", "checkpoint": None, "data": "vos", "split": "val"}
TUNED = {**ZERO, "checkpoint": "runs/x/best.ckpt", "adapter": "lora"}


def test_clip_results_record_rounds_and_the_report_shows_them(tmp_path):
    files = write_run(tmp_path / "runs" / "tuned", 0.0, TUNED)
    write_run(tmp_path / "runs" / "zero", 0.1, ZERO)
    rows = list(csv.DictReader(open(files["per_round"])))
    assert [(r["round"], r["clicks"], float(r["J"])) for r in rows] == [
        ("0", "1", 0.2),
        ("1", "2", 0.6),
    ]

    found = gather(tmp_path / "runs")
    assert [r["adapter"] for r in found] == ["zero-shot", "lora"]
    zero, tuned = found
    # per video then over videos: a = mean(0.9, 0.8, 0.6); b = mean(mean(0.7, 0.5), 0.3)
    j_mask = (0.7667 + 0.45) / 2
    assert tuned["propagate_mask/J"] == pytest.approx(j_mask, abs=1e-4)
    assert zero["propagate_mask/J"] == pytest.approx(j_mask - 0.1, abs=1e-4)
    assert tuned["propagate_mask/F"] == pytest.approx((0.5 + 0.3) / 2)
    assert tuned["propagate_clicks/JF@0"] == pytest.approx((0.2 + 0.1) / 2)
    assert tuned["propagate_clicks/JF@1"] == pytest.approx((0.6 + 0.3) / 2)
    assert tuned["propagate_clicks/JF"] == tuned["propagate_clicks/JF@1"]
    # offsets from the prompt: +1 (0.9, 0.7), +2 (0.8, 0.5), +3 (0.6), and object 2's +1 (0.3)
    assert tuned["propagate_mask/J_at_offset"] == pytest.approx(
        {1: (0.9 + 0.7 + 0.3) / 3, 2: (0.8 + 0.5) / 2, 3: 0.6}
    )

    assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "cmp")]) == 0
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    for title in ("propagate_mask J", "propagate_mask F", "propagate_mask J&F", "J&F@1"):
        assert title in md
    assert "propagate_mask mIoU" not in md  # image metrics are not clip columns
    assert "J by distance from the prompt" in md
    assert "| evaluation | +1 | +2 | +3 |" in md
    assert "| sam2.1_hiera_tiny / lora | 0.6333 | 0.6500 | 0.6000 |" in md
    png = (tmp_path / "cmp" / "comparison_j_by_offset.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    table = list(csv.DictReader(open(tmp_path / "cmp" / "comparison.csv")))
    assert [t["adapter"] for t in table] == ["zero-shot", "lora"]
    assert float(table[1]["propagate_clicks/JF@1"]) == pytest.approx(0.45)
    assert float(table[0]["propagate_mask/JF"]) == pytest.approx(zero["propagate_mask/JF"])


def test_j_by_offset_skips_nothing_and_averages_objects():
    scores = summarize_clips({"v": [track(1, 2, [3, 5], [0.5, 0.25], [0.0, 0.0])]})
    assert j_by_offset(scores) == {1: 0.5, 3: 0.25}
    assert j_by_offset({"per_video": {}}) == {}
