"""``samtune-eval data=vos``: the clip protocols through the official SAM2VideoPredictor, printed
and written to results.json; samtune's masks held equal to a plain SAM2VideoPredictor loop."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from samtune.data.datamodules.vos import VosDataModule
from samtune.evaluation.clips import (
    CLIP_PROTOCOL_VERSIONS,
    ROUND_KEYS,
    ClipEvaluator,
    propagate_objects,
    video_predictor_for,
)
from samtune.models import ModelSpec
from samtune.models.weights import load_model
from tests.data.clip_layouts import write_vos
from tests.helpers import REPO, SMALL_SIZE
from tests.inference.test_predictor import init_sam2_hydra
from tests.models.helpers import SAM2_CONFIG

NUMBER = r"(\d\.\d{4})"


@pytest.fixture
def davis(tmp_path):
    root = tmp_path / "DAVIS"
    truth = write_vos(root, "davis", videos={"train": 1, "val": 2}, n_frames=4, size=(48, 64))
    return root, truth


def val_clips(root):
    module = VosDataModule(
        root=str(root), train_split="train", val_split="val", image_size=SMALL_SIZE
    )
    return module.raw_dataset("val")


@pytest.mark.slow
def test_samtune_eval_prints_j_f_and_writes_results(davis, tmp_path, tiny_checkpoint):
    root, truth = davis
    out = tmp_path / "eval"
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "samtune.cli.eval",
            "data=vos",
            f"data.root={root}",
            "data.val_split=val",
            "ckpt=none",
            f"model.image_size={SMALL_SIZE}",
            f"model.checkpoint={tiny_checkpoint}",
            "clip_evaluation.protocols=[propagate_mask,propagate_box]",
            f"hydra.run.dir={out}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    results = json.loads((out / "results.json").read_text())
    assert results["protocol_version"] == {"propagate_mask": 1, "propagate_box": 1}
    assert results["summary"]["evaluated"]["kind"] == "base"
    assert results["summary"]["split"] == "val"
    assert results["counts"] == {"videos": 2, "objects": 6}
    assert results["aggregates"]["propagate_box"]["JF"] == results["clips"]["propagate_box"]["JF"]
    printed = proc.stdout
    for protocol in ("propagate_mask", "propagate_box"):
        scores = results["clips"][protocol]
        assert set(scores["per_video"]) == set(truth["val"])
        assert scores["n_videos"] == 2
        video_means = []
        for name, video in scores["per_video"].items():
            # objects 1 and 2 prompted on frame 0, object 3 on frame 2 (it appears there)
            assert {k: o["prompt_frame"] for k, o in video["objects"].items()} == {
                "1": 0,
                "2": 0,
                "3": 2,
            }
            assert video["objects"]["1"]["frames"] == [1, 2, 3]
            assert video["objects"]["3"]["frames"] == [3]
            for obj in video["objects"].values():
                assert obj["J"] == pytest.approx(np.mean(obj["J_per_frame"]))
                assert 0.0 <= obj["J"] <= 1.0 and 0.0 <= obj["F"] <= 1.0
            j = np.mean([o["J"] for o in video["objects"].values()])
            f = np.mean([o["F"] for o in video["objects"].values()])
            assert video["J"] == pytest.approx(j) and video["F"] == pytest.approx(f)
            video_means.append((j, f))
            line = re.search(
                rf"^{protocol}\s+{name}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+3$", printed, re.M
            )
            assert line, printed
            assert [float(v) for v in line.groups()] == pytest.approx([j, f, (j + f) / 2], abs=6e-5)
        j, f = np.mean(video_means, axis=0)
        assert scores["J"] == pytest.approx(j) and scores["JF"] == pytest.approx((j + f) / 2)
        mean = re.search(
            rf"^{protocol}\s+mean\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+6$", printed, re.M
        )
        assert mean, printed
        assert [float(v) for v in mean.groups()] == pytest.approx([j, f, (j + f) / 2], abs=6e-5)
    rows = (out / "per_object.csv").read_text().splitlines()
    assert rows[0] == "protocol,video,object_id,prompt_frame,frames,J,F,JF"
    assert len(rows) == 1 + 2 * 2 * 3


def hand_loop(official, folder, clip, protocol):
    """The official predictor on the DAVIS JPEG folder, one prompt per object, written out."""
    from samtune.evaluation.clicks import center_points
    from samtune.prompts.sampling import mask_to_box

    state = official.init_state(video_path=str(folder))
    masks = {}
    first = {}
    for n in range(clip.masks.shape[0]):
        first.setdefault(int(np.flatnonzero(clip.present[n])[0]), []).append(n)
    for frame, objects in sorted(first.items()):
        official.reset_state(state)
        for n in objects:
            gt = torch.from_numpy(clip.masks[n, frame])
            if protocol == "propagate_mask":
                official.add_new_mask(inference_state=state, frame_idx=frame, obj_id=n + 1, mask=gt)
            elif protocol == "propagate_box":
                box = mask_to_box(gt[None])[0].numpy()
                official.add_new_points_or_box(
                    inference_state=state, frame_idx=frame, obj_id=n + 1, box=box
                )
            else:
                point = center_points(gt[None]).numpy()
                official.add_new_points_or_box(
                    inference_state=state,
                    frame_idx=frame,
                    obj_id=n + 1,
                    points=point,
                    labels=np.array([1], np.int32),
                )
        for t, obj_ids, logits in official.propagate_in_video(state, start_frame_idx=frame):
            for row, obj_id in enumerate(obj_ids):
                if t > frame:
                    masks[(obj_id - 1, t)] = (logits[row, 0] > 0).numpy()
    return masks


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["propagate_mask", "propagate_box", "propagate_point1"])
def test_propagated_masks_equal_the_official_video_predictor(davis, tiny_checkpoint, protocol):
    from sam2.build_sam import build_sam2_video_predictor

    root, _ = davis
    clip = val_clips(root)[0]
    model, info = load_model(tiny_checkpoint, ModelSpec(), image_size=SMALL_SIZE)
    ours_predictor = video_predictor_for(model, info, "cpu")
    with torch.inference_mode():
        ours = propagate_objects(ours_predictor, clip, protocol)
    init_sam2_hydra()
    official = build_sam2_video_predictor(
        SAM2_CONFIG, str(tiny_checkpoint), device="cpu",
        hydra_overrides_extra=[f"++model.image_size={SMALL_SIZE}"],
    )  # fmt: skip
    folder = root / "JPEGImages" / "480p" / clip.meta["video"]
    with torch.inference_mode():
        ref = hand_loop(official, folder, clip, protocol)
    flat = {(n, t): m for n, (_, frames) in ours.items() for t, m in frames.items()}
    assert set(flat) == set(ref)
    assert len(flat) == 3 + 3 + 1  # objects 1, 2 from frame 0; object 3 from frame 2
    for key, mask in flat.items():
        assert mask.shape == (48, 64)
        assert np.array_equal(mask, ref[key]), key


def test_clip_evaluator_checks_its_protocols():
    with pytest.raises(ValueError, match="propagate_points"):
        ClipEvaluator(protocols=["propagate_points"])
    with pytest.raises(ValueError, match="none given"):
        ClipEvaluator(protocols=[])
    assert ClipEvaluator(protocols=["propagate_mask"]).protocol_versions() == {"propagate_mask": 1}
    assert set(CLIP_PROTOCOL_VERSIONS) >= {"propagate_mask", "propagate_box", "propagate_point1"}


def hand_click_loop(official, folder, clip, rounds):
    """``propagate_clicks`` written out on the official predictor (built with corrected frames as
    conditioning frames): point1, then per round one correction click per object on its frame of
    lowest IoU, all of that frame's clicks given again, and tracking again from the prompt frame.
    Returns the masks after each round, ``{(object index, frame): mask}``."""
    from samtune.evaluation.clicks import center_points, error_center_clicks

    def iou(a, b):
        union = np.logical_or(a, b).sum()
        return 1.0 if union == 0 else np.logical_and(a, b).sum() / union

    def track(state, frame):
        out = {}
        for t, obj_ids, logits in official.propagate_in_video(state, start_frame_idx=frame):
            for row, obj_id in enumerate(obj_ids):
                if t > frame:
                    out[(obj_id - 1, t)] = (logits[row, 0] > 0).numpy()
        return out

    state = official.init_state(video_path=str(folder))
    first = {}
    for n in range(clip.masks.shape[0]):
        first.setdefault(int(np.flatnonzero(clip.present[n])[0]), []).append(n)
    after = [{} for _ in range(rounds + 1)]
    for frame, objects in sorted(first.items()):
        official.reset_state(state)
        given = {}
        for n in objects:
            given[(n, frame)] = [center_points(torch.from_numpy(clip.masks[n, frame])[None])[0]]
            official.add_new_points_or_box(
                state, frame, n + 1, points=torch.stack(given[(n, frame)]).numpy(),
                labels=np.ones(1, np.int32),
            )  # fmt: skip
        labels = {key: [1] for key in given}
        masks = track(state, frame)
        after[0].update(masks)
        for r in range(1, rounds + 1):
            any_click = False
            for n in objects:
                scored = [t for t in range(frame + 1, clip.num_frames) if clip.annotated[t]]
                ious = [iou(masks[(n, t)], clip.masks[n, t]) for t in scored]
                if not ious or min(ious) == 1.0:
                    continue
                t = scored[int(np.argmin(ious))]
                pts, lab = error_center_clicks(
                    torch.from_numpy(masks[(n, t)])[None], torch.from_numpy(clip.masks[n, t])[None]
                )
                given.setdefault((n, t), []).append(pts[0, 0])
                labels.setdefault((n, t), []).append(int(lab[0, 0]))
                official.add_new_points_or_box(
                    state, t, n + 1, points=torch.stack(given[(n, t)]).numpy(),
                    labels=np.array(labels[(n, t)], np.int32),
                )  # fmt: skip
                any_click = True
            if any_click:
                masks = track(state, frame)
            after[r].update(masks)
    return after


@pytest.mark.slow
def test_propagate_clicks_equals_a_hand_loop_over_the_official_predictor(davis, tiny_checkpoint):
    from sam2.build_sam import build_sam2_video_predictor

    from samtune.evaluation.clips import propagate_clicks

    root, _ = davis
    clip = val_clips(root)[0]
    model, info = load_model(tiny_checkpoint, ModelSpec(), image_size=SMALL_SIZE)
    ours_predictor = video_predictor_for(model, info, "cpu")
    with torch.inference_mode():
        ours, clicks = propagate_clicks(ours_predictor, clip, 2)
        point1 = propagate_objects(ours_predictor, clip, "propagate_point1")
    assert ours_predictor.add_all_frames_to_correct_as_cond is False  # restored
    init_sam2_hydra()
    official = build_sam2_video_predictor(
        SAM2_CONFIG, str(tiny_checkpoint), device="cpu",
        hydra_overrides_extra=[
            f"++model.image_size={SMALL_SIZE}", "++model.add_all_frames_to_correct_as_cond=true"
        ],
    )  # fmt: skip
    folder = root / "JPEGImages" / "480p" / clip.meta["video"]
    with torch.inference_mode():
        ref = hand_click_loop(official, folder, clip, 2)
    assert len(ours) == len(ref) == 3
    for r, (predictions, expected) in enumerate(zip(ours, ref, strict=True)):
        flat = {(n, t): m for n, (_, frames) in predictions.items() for t, m in frames.items()}
        assert set(flat) == set(expected)
        for key, mask in flat.items():
            assert np.array_equal(mask, expected[key]), (r, key)
    # round 0 is propagate_point1; the random-init model is wrong, so every object got clicks
    for n, (_, frames) in point1.items():
        for t, mask in frames.items():
            assert np.array_equal(mask, ours[0][n][1][t])
    assert sorted(clicks) == [0, 1, 2]
    for record in clicks.values():
        assert [c[0] for c in record] == [0, 1, 2], record
        assert all(c[1] > record[0][1] for c in record[1:])  # corrections after the prompt frame
    changed = any(
        not np.array_equal(ours[0][n][1][t], ours[2][n][1][t])
        for n in ours[0]
        for t in ours[0][n][1]
    )
    assert changed  # the corrections reached the masks


@pytest.mark.slow
def test_samtune_eval_reports_j_and_f_per_round_of_clicks_without_sam2s_bars(
    davis, tmp_path, tiny_checkpoint
):
    root, _ = davis
    out = tmp_path / "eval"
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [
            sys.executable, "-m", "samtune.cli.eval", "data=vos", f"data.root={root}",
            "data.val_split=val", "ckpt=none", f"model.image_size={SMALL_SIZE}",
            f"model.checkpoint={tiny_checkpoint}", "max_images=1",
            "clip_evaluation.protocols=[propagate_point1,propagate_clicks]",
            "clip_evaluation.click_rounds=2", f"hydra.run.dir={out}",
        ],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "propagate in video" not in proc.stdout + proc.stderr
    assert "frame loading" not in proc.stdout + proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["kind"] == "clips"
    assert results["protocol_version"] == {"propagate_point1": 1, "propagate_clicks": 1}
    clicks, point1 = results["clips"]["propagate_clicks"], results["clips"]["propagate_point1"]
    assert len(clicks["JF_at_round"]) == 3
    assert results["aggregates"]["propagate_clicks"]["JF_at_round"] == clicks["JF_at_round"]
    # round 0 is propagate_point1; the protocol's numbers are the last round's
    assert clicks["J_at_round"][0] == pytest.approx(point1["J"])
    assert clicks["JF"] == pytest.approx(clicks["JF_at_round"][-1])
    for video in clicks["per_video"].values():
        for obj in video["objects"].values():
            assert obj["J_at_round"][-1] == pytest.approx(obj["J"])
            assert [c[0] for c in obj["clicks"]][0] == 0 and len(obj["clicks"]) <= 3
    for r, (j, f, jf) in enumerate(zip(*(clicks[k] for k in ROUND_KEYS), strict=True)):
        line = re.search(
            rf"^propagate_clicks\s+{r}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}$", proc.stdout, re.M
        )
        assert line, proc.stdout
        assert [float(v) for v in line.groups()] == pytest.approx([j, f, jf], abs=6e-5)
    rows = (out / "per_round.csv").read_text().splitlines()
    assert rows[0] == "protocol,video,object_id,round,clicks,J,F,JF"
    assert len(rows) == 1 + 3 * 3  # three objects, rounds 0-2


def test_clip_evaluator_checks_click_rounds():
    assert ClipEvaluator(protocols=["propagate_clicks"]).click_rounds == 3
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="click_rounds"):
            ClipEvaluator(protocols=["propagate_clicks"], click_rounds=bad)
    with pytest.raises(ValueError, match="propagate_clicks"):
        propagate_objects(None, None, "propagate_clicks")


def test_propagation_silences_only_sam2s_bar_and_only_while_it_runs(capsys):
    import sam2.sam2_video_predictor as module

    from samtune.inference.video import propagate, quiet_tqdm

    original = module.tqdm

    class Fake:
        """Stands in for a predictor: its generator makes a bar as sam2's does."""

        def propagate_in_video(self, state, **kwargs):
            for t in module.tqdm(range(3), desc="propagate in video"):
                yield t, [1], None

    assert [t for t, _, _ in propagate(Fake(), {})] == [0, 1, 2]
    assert module.tqdm is original
    with quiet_tqdm(module):
        with quiet_tqdm(module):
            pass
        assert module.tqdm is not original  # the outer block still holds it
    assert module.tqdm is original
    assert "propagate in video" not in capsys.readouterr().err
    list(module.tqdm(range(2), desc="propagate in video"))  # outside: the bar is shown again
    assert "propagate in video" in capsys.readouterr().err
