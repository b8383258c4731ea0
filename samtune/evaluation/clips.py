"""Clip evaluation: one prompt on the first frame, then SAM 2's memory path, scored as DAVIS does.

Protocols (one prompt per object, on the object's *prompt frame*: the first annotated frame
where it is present; objects that share a prompt frame are tracked together):

- ``propagate_mask``: the ground-truth mask (semi-supervised VOS, ``add_new_mask``);
- ``propagate_box``: the object's tight box (:func:`samtune.prompts.sampling.mask_to_box`,
  maxima inclusive, as the image ``box`` protocol);
- ``propagate_point1``: one positive click at the object's deepest point (distance transform,
  as the image ``point1`` protocol);
- ``propagate_clicks``: SAM 2's interactive video evaluation. Round 0 is ``propagate_point1``.
  Each of the ``click_rounds`` rounds after it gives every object one correction click on its
  scored frame of lowest J (the earliest on a tie; an object with J = 1 on all its scored frames
  gets none): the image ``clicks`` rule (:func:`samtune.evaluation.clicks.error_center_clicks`,
  the center of the largest error region of that frame's mask) at the video's resolution. The
  click is added with ``add_new_points_or_box`` on that frame together with the earlier clicks
  there (on the prompt frame, after the first click); the predictor refines the frame's tracked
  mask with them (SAM 2 feeds the previous mask logits back), and the frame becomes a
  conditioning frame, as in SAM 2.1's training recipe and its interactive evaluation
  (``add_all_frames_to_correct_as_cond``, set for this protocol only). The state is not reset:
  ``propagate_in_video`` then tracks again forwards from the prompt frame, every frame that is
  not a conditioning frame re-predicted with the memory of all conditioning frames (the
  corrected ones included, before or after it). Frames before the prompt frame are never
  scored, so nothing is tracked backwards. J, F and J&F are recorded after every round
  (``J_at_round`` ... for rounds ``0..click_rounds``); the protocol's J, F and J&F are those
  after the last round, and each object lists its clicks (round, frame, x, y, label).

The official ``SAM2VideoPredictor`` holding the evaluated weights tracks them forwards from the
prompt frame to the end of the video (sam2's own progress bar silenced,
:func:`samtune.inference.video.propagate`). An object's mask on a frame is its own mask logit > 0 at
the video's original resolution (objects are not merged into one label map, so they may overlap).

Metrics, on every annotated frame after the prompt frame:

- region J: IoU of the predicted and ground-truth masks, 1 when both are empty;
- boundary F: the boundary pixels of each mask (foreground pixels with a 4-neighbour in the
  background; the image border is not a boundary) are matched to the other mask's within a
  tolerance of ``max(1, round(0.008 * image diagonal))`` pixels (Euclidean); precision = matched
  predicted boundary pixels / predicted boundary pixels, recall = matched ground-truth boundary
  pixels / ground-truth boundary pixels, F = 2PR / (P + R); 1 when both boundaries are empty,
  0 when only one is;
- J&F: the mean of J and F.

Means: per object over its scored frames, per video over its objects, overall over the videos
(each video weighs the same, whatever its number of objects). An object with no annotated frame
after its prompt frame is not scored. Pixels of a void label (DAVIS' 255) count as background.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from samtune.data.clip import Clip
from samtune.evaluation.clicks import center_points, error_center_clicks
from samtune.evaluation.report.files import _json_safe
from samtune.inference.predictor import build_video_model
from samtune.inference.video import propagate, video_state
from samtune.io_atomic import write_json_atomic, write_text_atomic
from samtune.prompts.sampling import mask_to_box

log = logging.getLogger(__name__)

CLIP_PROTOCOLS = ("propagate_mask", "propagate_box", "propagate_point1", "propagate_clicks")
# The version of each clip protocol's definition (prompt, frames scored, resolution, metric),
# written to results.json as ``protocol_version``; a change raises it, with a CHANGELOG entry.
CLIP_PROTOCOL_VERSIONS = {
    "propagate_mask": 1,
    "propagate_box": 1,
    "propagate_point1": 1,
    "propagate_clicks": 1,
}
ROUND_KEYS = ("J_at_round", "F_at_round", "JF_at_round")
BOUNDARY_TOLERANCE = 0.008  # of the image diagonal, as DAVIS
_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)


def _masks(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(
            f"masks must be two H x W arrays of one size, got {pred.shape} and {gt.shape}"
        )
    return pred, gt


def region_j(pred: np.ndarray, gt: np.ndarray) -> float:
    """Region J: IoU of two ``H x W`` masks, 1 when both are empty."""
    pred, gt = _masks(pred, gt)
    union = int(np.logical_or(pred, gt).sum())
    if union == 0:
        return 1.0
    return int(np.logical_and(pred, gt).sum()) / union


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """The boundary pixels of ``mask``: foreground pixels with a background 4-neighbour (pixels
    beyond the image border count as foreground, so the border itself is not a boundary)."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask.copy()
    inner = ndimage.binary_erosion(mask, structure=_CROSS, border_value=1)
    return mask & ~inner


def boundary_tolerance(shape: Sequence[int]) -> int:
    """The matching tolerance in pixels for an image of ``shape`` ``(H, W)``:
    ``max(1, round(0.008 * diagonal))``, halves rounded up (8 px for DAVIS' 480 x 854)."""
    diagonal = math.hypot(float(shape[0]), float(shape[1]))
    return max(1, int(math.floor(BOUNDARY_TOLERANCE * diagonal + 0.5)))


def boundary_f(pred: np.ndarray, gt: np.ndarray, tolerance: int | None = None) -> float:
    """Boundary F of two ``H x W`` masks (see the module docstring).

    Args:
        pred: the predicted mask.
        gt: the ground-truth mask.
        tolerance: the matching distance in pixels (default :func:`boundary_tolerance`).
    """
    pred, gt = _masks(pred, gt)
    tol = boundary_tolerance(gt.shape) if tolerance is None else int(tolerance)
    pb, gb = boundary_map(pred), boundary_map(gt)
    n_pred, n_gt = int(pb.sum()), int(gb.sum())
    if n_pred == 0 and n_gt == 0:
        return 1.0
    if n_pred == 0 or n_gt == 0:
        return 0.0
    to_gt = ndimage.distance_transform_edt(~gb)
    to_pred = ndimage.distance_transform_edt(~pb)
    precision = int((to_gt[pb] <= tol).sum()) / n_pred
    recall = int((to_pred[gb] <= tol).sum()) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return float(np.mean(values)) if values else float("nan")


@dataclass
class ObjectTrack:
    """One object of one video under one protocol: its prompt and its scored frames.

    Attributes:
        object_id: the object's id in the source (VOS palette value...).
        prompt_frame: the frame it was prompted on.
        frames: the scored frames (annotated, after the prompt frame).
        j: region J on each scored frame.
        f: boundary F on each scored frame.
        rounds: ``propagate_clicks`` only: the object's (J, F) after each round, 0 first.
        clicks: ``propagate_clicks`` only: ``[round, frame, x, y, label]`` of each click.
    """

    object_id: int
    prompt_frame: int
    frames: list[int] = field(default_factory=list)
    j: list[float] = field(default_factory=list)
    f: list[float] = field(default_factory=list)
    rounds: list[tuple[float, float]] = field(default_factory=list)
    clicks: list[list[float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The object's means and per-frame values (with ``J_at_round``, ``F_at_round``,
        ``JF_at_round`` and ``clicks`` when it was clicked in rounds)."""
        j, f = _mean(self.j), _mean(self.f)
        out = {
            "J": j,
            "F": f,
            "JF": (j + f) / 2,
            "prompt_frame": self.prompt_frame,
            "frames": self.frames,
            "J_per_frame": self.j,
            "F_per_frame": self.f,
        }
        if self.rounds:
            out["J_at_round"] = [r[0] for r in self.rounds]
            out["F_at_round"] = [r[1] for r in self.rounds]
            out["JF_at_round"] = [(r[0] + r[1]) / 2 for r in self.rounds]
            out["clicks"] = self.clicks
        return out


def prompt_groups(clip: Clip) -> dict[int, list[int]]:
    """``{prompt frame: [object indices]}``: each object's first annotated frame where it is
    present (objects never present are left out)."""
    present = clip.present & clip.annotated[None, :]
    groups: dict[int, list[int]] = {}
    for n in range(present.shape[0]):
        frames = np.flatnonzero(present[n])
        if frames.size:
            groups.setdefault(int(frames[0]), []).append(n)
    return dict(sorted(groups.items()))


def add_prompt(
    predictor: Any, state: Any, protocol: str, frame: int, obj_id: int, mask: np.ndarray
) -> None:
    """Prompt object ``obj_id`` on ``frame`` from its ground-truth ``mask`` as ``protocol`` says."""

    tensor = torch.from_numpy(np.ascontiguousarray(mask, dtype=bool))
    if protocol == "propagate_mask":
        predictor.add_new_mask(state, frame, obj_id, tensor)
    elif protocol == "propagate_box":
        box = mask_to_box(tensor[None])[0].numpy().astype(np.float32)
        predictor.add_new_points_or_box(state, frame, obj_id, box=box)
    elif protocol == "propagate_point1":
        point = center_points(tensor[None]).numpy().astype(np.float32)
        predictor.add_new_points_or_box(
            state, frame, obj_id, points=point, labels=np.ones(1, dtype=np.int32)
        )
    else:
        raise ValueError(f"unknown clip protocol {protocol!r}; known: {list(CLIP_PROTOCOLS)}")


def propagate_objects(
    predictor: Any, clip: Clip, protocol: str, state: Any | None = None
) -> dict[int, tuple[int, dict[int, np.ndarray]]]:
    """Run ``protocol`` on ``clip``: per object index, its prompt frame and its predicted masks
    (``H x W`` bool, original resolution) on every frame after it, up to the last frame.

    Args:
        predictor: a ``SAM2VideoPredictor``.
        clip: the whole video.
        protocol: one of :data:`CLIP_PROTOCOLS`.
        state: an ``init_state`` of ``clip.frames`` to reuse (made here when None).
    """

    if protocol not in CLIP_PROTOCOLS or protocol == "propagate_clicks":
        raise ValueError(
            f"propagate_objects runs one prompt, not {protocol!r}; known: "
            f"{list(CLIP_PROTOCOLS[:3])} (propagate_clicks: see propagate_clicks)"
        )
    if state is None:
        state = video_state(predictor, clip.frames)
    out: dict[int, tuple[int, dict[int, np.ndarray]]] = {}
    for frame, objects in prompt_groups(clip).items():
        predictor.reset_state(state)
        for n in objects:
            add_prompt(predictor, state, protocol, frame, n + 1, clip.masks[n, frame])
        masks = _track(predictor, state, frame, objects)
        out.update({n: (frame, masks[n]) for n in objects})
    return out


def _track(
    predictor: Any, state: Any, frame: int, objects: Sequence[int]
) -> dict[int, dict[int, np.ndarray]]:
    """Per object index, its masks on the frames after ``frame``, tracked forwards from it."""
    masks: dict[int, dict[int, np.ndarray]] = {n: {} for n in objects}
    for t, obj_ids, logits in propagate(predictor, state, start_frame_idx=frame):
        if t == frame:
            continue
        binary = (logits[:, 0] > 0).cpu().numpy()
        for row, obj_id in enumerate(obj_ids):
            masks[int(obj_id) - 1][int(t)] = binary[row]
    return masks


def worst_frame(clip: Clip, n: int, prompt_frame: int, masks: dict[int, np.ndarray]) -> int | None:
    """Object ``n``'s scored frame of lowest J (the earliest on a tie), None when it has no
    scored frame or J = 1 on all of them (nothing to correct)."""
    worst, lowest = None, 1.0
    for t in range(prompt_frame + 1, clip.num_frames):
        if clip.annotated[t]:
            j = region_j(masks[t], clip.masks[n, t])
            if j < lowest:
                worst, lowest = t, j
    return worst


def propagate_clicks(
    predictor: Any, clip: Clip, rounds: int, state: Any | None = None
) -> tuple[list[dict[int, tuple[int, dict[int, np.ndarray]]]], dict[int, list[list[float]]]]:
    """``propagate_clicks`` on ``clip`` (see the module docstring).

    Args:
        predictor: a ``SAM2VideoPredictor``; its ``add_all_frames_to_correct_as_cond`` is True
            during the call and restored after it.
        clip: the whole video.
        rounds: the number of correction rounds after the first propagation.
        state: an ``init_state`` of ``clip.frames`` to reuse (made here when None).

    Returns:
        ``(predictions, clicks)``: ``predictions[r]`` as :func:`propagate_objects` returns, after
        round ``r`` (``rounds + 1`` entries); ``clicks[n]``, object index ``n``'s clicks as
        ``[round, frame, x, y, label]``.
    """
    if state is None:
        state = video_state(predictor, clip.frames)
    per_round: list[dict[int, tuple[int, dict[int, np.ndarray]]]] = [
        {} for _ in range(int(rounds) + 1)
    ]
    clicks: dict[int, list[list[float]]] = {}
    before = predictor.add_all_frames_to_correct_as_cond
    predictor.add_all_frames_to_correct_as_cond = True
    try:
        for frame, objects in prompt_groups(clip).items():
            predictor.reset_state(state)
            on_frame: dict[tuple[int, int], tuple[list[list[float]], list[int]]] = {}
            for n in objects:
                point = center_points(torch.from_numpy(clip.masks[n, frame])[None])[0].tolist()
                on_frame[(n, frame)] = ([point], [1])
                clicks[n] = [[0, frame, point[0], point[1], 1]]
                _add_clicks(predictor, state, frame, n, on_frame[(n, frame)])
            masks = _track(predictor, state, frame, objects)
            per_round[0].update({n: (frame, masks[n]) for n in objects})
            for r in range(1, int(rounds) + 1):
                clicked = False
                for n in objects:
                    t = worst_frame(clip, n, frame, masks[n])
                    if t is None:
                        continue
                    pred = torch.from_numpy(masks[n][t])[None]
                    gt = torch.from_numpy(clip.masks[n, t])[None]
                    points, labels = error_center_clicks(pred, gt)
                    point, label = points[0, 0].tolist(), int(labels[0, 0])
                    entry = on_frame.setdefault((n, t), ([], []))
                    entry[0].append(point)
                    entry[1].append(label)
                    clicks[n].append([r, t, point[0], point[1], label])
                    _add_clicks(predictor, state, t, n, entry)
                    clicked = True
                if clicked:
                    masks = _track(predictor, state, frame, objects)
                per_round[r].update({n: (frame, masks[n]) for n in objects})
    finally:
        predictor.add_all_frames_to_correct_as_cond = before
    return per_round, clicks


def _add_clicks(
    predictor: Any, state: Any, frame: int, n: int, entry: tuple[list[list[float]], list[int]]
) -> None:
    """All of object ``n``'s clicks on ``frame`` (replacing the ones given before)."""
    predictor.add_new_points_or_box(
        state,
        frame,
        n + 1,
        points=np.asarray(entry[0], dtype=np.float32),
        labels=np.asarray(entry[1], dtype=np.int32),
        clear_old_points=True,
    )


def score_clip(
    clip: Clip, predictions: dict[int, tuple[int, dict[int, np.ndarray]]]
) -> list[ObjectTrack]:
    """J and F of each predicted object on the annotated frames after its prompt frame."""
    tol = boundary_tolerance(clip.frames.shape[1:3])
    tracks = []
    for n, (frame, masks) in sorted(predictions.items()):
        track = ObjectTrack(object_id=int(clip.object_ids[n]), prompt_frame=frame)
        for t in range(frame + 1, clip.num_frames):
            if not clip.annotated[t]:
                continue
            if t not in masks:
                raise ValueError(
                    f"{clip.meta.get('file')}: no prediction of object {n} on frame {t}"
                )
            gt = clip.masks[n, t]
            track.frames.append(t)
            track.j.append(region_j(masks[t], gt))
            track.f.append(boundary_f(masks[t], gt, tol))
        if track.frames:
            tracks.append(track)
    return tracks


def summarize_clips(per_video: dict[str, list[ObjectTrack]]) -> dict[str, Any]:
    """Means of one protocol: per video over its objects, then over the videos.

    Returns:
        ``{"J", "F", "JF", "n_videos", "n_objects", "per_video": {video: {"J", "F", "JF",
        "objects": {object id: ObjectTrack.as_dict()}}}}``; videos without a scored object are
        left out of the means.
    """
    videos: dict[str, Any] = {}
    for name, tracks in sorted(per_video.items()):
        objects = {str(t.object_id): t.as_dict() for t in tracks}
        j = _mean(o["J"] for o in objects.values())
        f = _mean(o["F"] for o in objects.values())
        videos[name] = {"J": j, "F": f, "JF": (j + f) / 2, "objects": objects}
    scored = [v for v in videos.values() if v["objects"]]
    j = _mean(v["J"] for v in scored)
    f = _mean(v["F"] for v in scored)
    return {
        "J": j,
        "F": f,
        "JF": (j + f) / 2,
        "n_videos": len(scored),
        "n_objects": sum(len(v["objects"]) for v in scored),
        "per_video": videos,
    }


def summarize_rounds(per_video: dict[str, list[list[ObjectTrack]]]) -> dict[str, Any]:
    """Means of ``propagate_clicks``: :func:`summarize_clips` of the last round, with
    ``J_at_round``, ``F_at_round`` and ``JF_at_round`` (rounds 0, 1, ...) overall and per video.

    Args:
        per_video: per video, its scored objects after each round (round 0 first), the last
            round's tracks holding ``rounds`` and ``clicks``.
    """
    summary = summarize_clips({name: rounds[-1] for name, rounds in per_video.items()})
    count = max((len(rounds) for rounds in per_video.values()), default=1)
    each = [
        summarize_clips({name: rounds[r] for name, rounds in per_video.items()})
        for r in range(count)
    ]
    for key, metric in zip(ROUND_KEYS, ("J", "F", "JF"), strict=True):
        summary[key] = [s[metric] for s in each]
        for name, video in summary["per_video"].items():
            video[key] = [s["per_video"][name][metric] for s in each]
    return summary


def clip_name(clip: Clip, index: int) -> str:
    """The name a video is reported under (``meta["video"]``, else its file, else its index)."""
    return str(clip.meta.get("video") or clip.meta.get("file") or f"video{index}")


class ClipEvaluator:
    """Runs the clip protocols over a clip dataset of whole videos.

    Args:
        protocols: which of :data:`CLIP_PROTOCOLS` to run, in order.
        max_videos: evaluate the first ``max_videos`` only (None: all).
        progress: log one line per video.
        volume_protocols: on ``data=volumes``, the propagated protocols run beside the
            per-slice ones (``keyslice_box``, see :mod:`samtune.evaluation.keyslice`).
        nsd_tolerance_mm: the NSD tolerance of ``keyslice_box``.
        click_rounds: the correction rounds of ``propagate_clicks`` after its first propagation.
    """

    def __init__(
        self,
        *,
        protocols: Sequence[str] = CLIP_PROTOCOLS,
        max_videos: int | None = None,
        progress: bool = True,
        volume_protocols: Sequence[str] = ("keyslice_box",),
        nsd_tolerance_mm: float = 2.0,
        click_rounds: int = 3,
    ) -> None:
        protocols = [str(p) for p in protocols]
        unknown = [p for p in protocols if p not in CLIP_PROTOCOLS]
        if unknown or not protocols:
            raise ValueError(
                f"clip_evaluation.protocols: {unknown or 'none given'}; choose from {list(CLIP_PROTOCOLS)}"
            )
        self.protocols = tuple(protocols)
        self.max_videos = None if max_videos is None else int(max_videos)
        self.progress = bool(progress)
        self.volume_protocols = tuple(str(p) for p in volume_protocols)
        if set(self.volume_protocols) - {"keyslice_box"}:
            raise ValueError(
                f"clip_evaluation.volume_protocols: {list(self.volume_protocols)}; known: "
                "['keyslice_box']"
            )
        self.nsd_tolerance_mm = float(nsd_tolerance_mm)
        if isinstance(click_rounds, bool) or int(click_rounds) != click_rounds or click_rounds < 0:
            raise ValueError(
                f"clip_evaluation.click_rounds: {click_rounds!r}; expected a whole number >= 0"
            )
        self.click_rounds = int(click_rounds)

    def protocol_versions(self) -> dict[str, int]:
        """``{protocol: version}`` of the protocols run."""
        return {p: CLIP_PROTOCOL_VERSIONS[p] for p in self.protocols}

    def run(self, predictor: Any, dataset: Any) -> dict[str, Any]:
        """``{protocol: summarize_clips(...)}`` of every protocol on every video of ``dataset``
        (items are :class:`Clip` or None for a skipped video)."""

        count = len(dataset) if self.max_videos is None else min(len(dataset), self.max_videos)
        per_protocol: dict[str, dict[str, list[ObjectTrack]]] = {p: {} for p in self.protocols}
        per_round: dict[str, list[list[ObjectTrack]]] = {}
        with torch.inference_mode():
            for index in range(count):
                clip = dataset[index]
                if clip is None:
                    continue
                name = clip_name(clip, index)
                state = video_state(predictor, clip.frames)
                for protocol in self.protocols:
                    if protocol == "propagate_clicks":
                        per_round[name] = self._clicked(predictor, clip, state)
                        continue
                    predictions = propagate_objects(predictor, clip, protocol, state=state)
                    per_protocol[protocol][name] = score_clip(clip, predictions)
                if self.progress:
                    log.info("clip %d/%d %s: %d frames", index + 1, count, name, clip.num_frames)
        return {
            p: summarize_rounds(per_round) if p == "propagate_clicks" else summarize_clips(v)
            for p, v in per_protocol.items()
        }

    def _clicked(self, predictor: Any, clip: Clip, state: Any) -> list[list[ObjectTrack]]:
        """``propagate_clicks`` on one video: its scored objects after each round, the last
        round's with their per-round (J, F) and clicks."""
        predictions, clicks = propagate_clicks(predictor, clip, self.click_rounds, state=state)
        rounds = [score_clip(clip, p) for p in predictions]
        by_id = {int(clip.object_ids[n]): n for n in clicks}
        for k, track in enumerate(rounds[-1]):
            track.rounds = [(_mean(r[k].j), _mean(r[k].f)) for r in rounds]
            track.clicks = clicks[by_id[track.object_id]]
        return rounds


def clip_table(protocols: dict[str, Any]) -> str:
    """The printed table: J, F and J&F per protocol, per video and their mean; then, for
    ``propagate_clicks``, the means after each round."""
    width = max(
        [len("video"), len("mean")] + [len(v) for s in protocols.values() for v in s["per_video"]]
    )
    lines = [f"{'protocol':<18} {'video':<{width}} {'J':>7} {'F':>7} {'J&F':>7} objects"]
    for protocol, scores in protocols.items():
        for name, video in scores["per_video"].items():
            lines.append(
                f"{protocol:<18} {name:<{width}} {video['J']:7.4f} {video['F']:7.4f} "
                f"{video['JF']:7.4f} {len(video['objects'])}"
            )
        lines.append(
            f"{protocol:<18} {'mean':<{width}} {scores['J']:7.4f} {scores['F']:7.4f} "
            f"{scores['JF']:7.4f} {scores['n_objects']}"
        )
    for protocol, scores in protocols.items():
        if "JF_at_round" in scores:
            lines += ["", f"{'protocol':<18} {'round':>5} {'J':>7} {'F':>7} {'J&F':>7}"]
            for r, (j, f, jf) in enumerate(zip(*(scores[k] for k in ROUND_KEYS), strict=True)):
                lines.append(f"{protocol:<18} {r:>5} {j:7.4f} {f:7.4f} {jf:7.4f}")
    return "\n".join(lines)


def video_predictor_for(model: torch.nn.Module, info: dict[str, Any], device: str) -> Any:
    """The official ``SAM2VideoPredictor`` holding ``model``'s weights (as loaded by
    :func:`samtune.models.weights.load_model`, adapters merged), at its ``image_size``."""

    video = build_video_model(str(info["name"]), image_size=int(info["image_size"]))
    video.load_state_dict(model.state_dict(), strict=True)
    return video.to(device).eval()


CSV_COLUMNS = ("protocol", "video", "object_id", "prompt_frame", "frames", "J", "F", "JF")
ROUND_CSV_COLUMNS = ("protocol", "video", "object_id", "round", "clicks", "J", "F", "JF")


def write_clip_results(
    protocols: dict[str, Any], versions: dict[str, int], summary: dict[str, Any], out_dir: Any
) -> dict[str, Any]:
    """Write ``results.json`` (``summary``, ``protocol_version``, ``counts``, ``aggregates``:
    each protocol's means, with ``J_at_round``... for ``propagate_clicks``; ``clips``: the means
    and per-video, per-object, per-frame values), ``per_object.csv`` and, when a protocol ran in
    rounds, ``per_round.csv`` (each object's J, F, J&F and clicks so far after each round) into
    ``out_dir``.

    Returns:
        ``{"results": path, "per_object": path}`` and ``"per_round": path`` when written.
    """
    import csv
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = {
        "summary": dict(summary),
        "kind": "clips",
        "protocols": list(protocols),
        "protocol_version": dict(versions),
        "counts": {
            "videos": max((int(v["n_videos"]) for v in protocols.values()), default=0),
            "objects": max((int(v["n_objects"]) for v in protocols.values()), default=0),
        },
        # the means alone, under the key every results.json has (samtune-report reads it)
        "aggregates": {
            p: {k: v[k] for k in ("J", "F", "JF", "n_videos", "n_objects", *ROUND_KEYS) if k in v}
            for p, v in protocols.items()
        },
        "clips": protocols,
    }
    results = write_json_atomic(out / "results.json", _json_safe(data), indent=1)
    rows = [",".join(CSV_COLUMNS)]
    for protocol, scores in protocols.items():
        for video, entry in scores["per_video"].items():
            for object_id, obj in entry["objects"].items():
                values = [protocol, video, object_id, obj["prompt_frame"], len(obj["frames"])]
                values += [f"{obj[k]:.6f}" for k in ("J", "F", "JF")]
                rows.append(_csv_row(values, csv))
    per_object = write_text_atomic(out / "per_object.csv", "\n".join(rows) + "\n")
    files = {"results": results, "per_object": per_object}
    rows = [",".join(ROUND_CSV_COLUMNS)]
    for protocol, scores in protocols.items():
        for video, entry in scores["per_video"].items():
            for object_id, obj in entry.get("objects", {}).items():
                for r, values in enumerate(zip(*(obj.get(k, []) for k in ROUND_KEYS))):
                    clicks = sum(1 for c in obj["clicks"] if c[0] <= r)
                    row = [protocol, video, object_id, r, clicks]
                    rows.append(_csv_row(row + [f"{v:.6f}" for v in values], csv))
    if len(rows) > 1:
        files["per_round"] = write_text_atomic(out / "per_round.csv", "\n".join(rows) + "\n")
    return files


def _csv_row(values: list[Any], csv: Any) -> str:
    import io

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(values)
    return buffer.getvalue()
