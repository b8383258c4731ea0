"""The benchmark's clips section at a tiny size: a clip step against T image steps, and
samtune's propagate_mask against a plain SAM2VideoPredictor loop (masks equal)."""

from __future__ import annotations

import json

import numpy as np

from scripts.bench import cli as bench
from scripts.bench.clips import moving_clip


def test_moving_clips_keep_every_object_and_read_back_from_jpeg(tmp_path):
    clip = moving_clip(3, frames=4, objects=3, height=48, width=64, folder=tmp_path / "v")
    assert clip.frames.shape == (4, 48, 64, 3) and clip.masks.shape == (3, 4, 48, 64)
    assert clip.masks.reshape(3, 4, -1).any(axis=2).all()  # every object on every frame
    assert not (clip.masks.sum(axis=0) > 1).any()  # objects do not overlap
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == [f"{t:05d}.jpg" for t in range(4)]
    # the objects move
    assert not np.array_equal(clip.masks[:, 0], clip.masks[:, 3])


def test_clip_section_writes_positive_ratios(tmp_path, capsys):
    out = tmp_path / "clips.json"
    argv = ["--quick", "--sections", "clips", "--device", "cpu", "--threads", "1"]
    result = bench.main([*argv, "--json", str(out)])
    written = json.loads(out.read_text())["clips"]
    assert written == json.loads(json.dumps(result["clips"], default=str))
    (train,) = written["train"]
    assert train["config"] == "lora" and train["frames"] == 3 and train["objects"] == 2
    for key in ("ratio", "flop_ratio", "clip_step_s", "image_steps_s"):
        assert isinstance(train[key], float) and train[key] > 0, key
    assert train["ratio"] == train["clip_step_s"] / train["image_steps_s"]
    clip = train["clip"]
    assert clip["estimated_memory_mb"] > 0 and clip["peak_memory_mb"] > 0
    # one decoder pass per frame, then the recipe's corrections on its two correction frames
    assert clip["prompt_steps"] == 3 + clip["correction_frames"] * clip["correction_clicks"]
    ev = written["eval"]
    assert isinstance(ev["ratio"], float) and ev["ratio"] > 0
    assert ev["ratio"] == ev["samtune_s"] / ev["official_s"]
    assert ev["masks_equal"] is True and ev["masks_compared"] == 2 * 2  # 2 objects x frames 1-2
    printed = capsys.readouterr().out
    assert "| clip evaluation (propagate_mask) |" in printed and "T image steps s" in printed
