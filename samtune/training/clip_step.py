"""One training step of SAM 2.1's memory path on a batch of clips, as SAM 2's ``SAM2Train`` takes it.

A clip step encodes every frame, draws a :class:`ClipPlan` (mask or click prompts, the initial
conditioning frames, the frames that get correction clicks), then tracks the frames in SAM 2's
order: the initial conditioning frames first, then the others in time order. Each frame runs
``track_step`` of the official ``SAM2Base`` (memory attention over the memory bank and the
object pointers, prompt encoder, mask decoder); a frame chosen for corrections gets
``correction_clicks`` more clicks, each sampled from the error of the previous step (or, with
``click_from_gt_prob``, from the ground truth) and decoded with the previous mask logits; its
last prediction goes to the memory encoder. Frames with corrections become conditioning
frames when ``add_corrected_as_cond``.

The loss is SAM 2's ``MultiStepMultiMasksAndIous``: :class:`~samtune.training.loss.SAM2Loss`
of every prediction step of every frame, summed, each divided by the number of objects of the
batch. Objects absent on a frame only teach the object score there. A frame that the data
leaves unannotated for a clip is not supervised for that clip's objects and gets no
prompts or corrections.

The random choices use one ``torch.Generator`` (the plan, boxes, clicks), so a step is
reproducible from its key; the test suite holds this step equal to ``SAM2Train``'s forward with
the same plan and clicks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from samtune.validation import check_number

Clicker = Callable[[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class VideoRecipe:
    """SAM 2.1's video training prompts (defaults: ``sam2.1_hiera_b+_MOSE_finetune.yaml``).

    Args:
        point_prob: probability that a clip is prompted with clicks or a box (else the
            ground-truth masks of its initial conditioning frames).
        box_prob: with clicks, the probability that the first prompt on a frame is a box.
        num_init_cond_frames: initial conditioning frames (frame 0 and random others).
        rand_init_cond_frames: draw 1..``num_init_cond_frames`` of them per clip.
        num_frames_to_correct: frames that get correction clicks (the initial conditioning
            frames and random others), with click prompts only.
        rand_frames_to_correct: draw ``num_init_cond``..``num_frames_to_correct`` per clip.
        correction_clicks: clicks added on each such frame, one per step.
        click_from_gt_prob: per click, the probability of sampling it from the ground truth
            instead of the error region.
        add_corrected_as_cond: frames with corrections become conditioning frames.
        box_noise: box corner jitter as a fraction of the box side.
        box_noise_max_px: cap of that jitter in pixels.
        checkpoint_correction_steps: recompute single-mask correction steps in the backward
            pass (SAM 2's ``use_act_ckpt_iterative_pt_sampling``).
    """

    point_prob: float = 0.5
    box_prob: float = 0.5
    num_init_cond_frames: int = 2
    rand_init_cond_frames: bool = True
    num_frames_to_correct: int = 2
    rand_frames_to_correct: bool = True
    correction_clicks: int = 7
    click_from_gt_prob: float = 0.1
    add_corrected_as_cond: bool = True
    box_noise: float = 0.1
    box_noise_max_px: float = 20.0
    checkpoint_correction_steps: bool = False

    def __post_init__(self) -> None:
        for name in ("point_prob", "box_prob", "click_from_gt_prob"):
            check_number(f"training.recipe.{name}", getattr(self, name), ge=0, le=1)
        check_number("training.recipe.num_init_cond_frames", self.num_init_cond_frames, ge=1)
        check_number("training.recipe.correction_clicks", self.correction_clicks, ge=0)
        if self.num_frames_to_correct < self.num_init_cond_frames:
            raise ValueError(
                f"training.recipe.num_frames_to_correct ({self.num_frames_to_correct}) must be at "
                f"least num_init_cond_frames ({self.num_init_cond_frames}): every initial "
                "conditioning frame gets corrections"
            )


@dataclass
class ClipPlan:
    """The prompts of one clip step.

    Attributes:
        use_points: clicks/boxes (True) or ground-truth masks (False) on the initial
            conditioning frames.
        init_cond_frames: initial conditioning frames, frame 0 first.
        correct_frames: frames that get correction clicks (empty with mask prompts).
        point_inputs: per initial conditioning frame, ``{"point_coords": N x P x 2,
            "point_labels": N x P}`` (with click prompts).
        mask_inputs: per initial conditioning frame, ``N x 1 x S x S`` float masks (with mask
            prompts).
    """

    use_points: bool
    init_cond_frames: list[int]
    correct_frames: list[int]
    point_inputs: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    mask_inputs: dict[int, torch.Tensor] = field(default_factory=dict)


def processing_order(plan: ClipPlan, num_frames: int) -> list[int]:
    """SAM 2's tracking order: the initial conditioning frames, then the others in time order."""
    return list(plan.init_cond_frames) + [
        t for t in range(num_frames) if t not in plan.init_cond_frames
    ]


def _rand(generator: torch.Generator, *shape: int, device: torch.device) -> torch.Tensor:
    return torch.rand(*shape, generator=generator).to(device)


def error_click(
    gt: torch.Tensor, pred: torch.Tensor | None, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One click per object, uniform over the error region, as SAM 2's
    ``sample_random_points_from_errors`` (a negative click on the background when the
    prediction is exact; from the ground truth alone when ``pred`` is None).

    Args:
        gt: ``N x 1 x H x W`` bool.
        pred: ``N x 1 x H x W`` bool, or None.

    Returns:
        ``N x 1 x 2`` float (x, y) and ``N x 1`` int32 labels (1 positive, 0 negative).
    """
    gt = gt.bool()
    pred = torch.zeros_like(gt) if pred is None else pred.bool()
    n, _, h, w = gt.shape
    fp = ~gt & pred
    fn = gt & ~pred
    all_correct = torch.all((gt == pred).flatten(2), dim=2)[..., None, None]
    noise = _rand(generator, n, 1, h, w, 2, device=gt.device)
    noise[..., 0] *= fp | (all_correct & ~gt)
    noise[..., 1] *= fn
    idx = noise.flatten(2).argmax(dim=2)
    labels = (idx % 2).to(torch.int32)
    idx = idx // 2
    points = torch.stack([idx % w, idx // w], dim=2).to(torch.float)
    return points, labels


def box_prompt(
    gt: torch.Tensor, generator: torch.Generator, *, noise: float, noise_max_px: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The jittered box of each mask as two corner clicks (labels 2 and 3), as SAM 2's
    ``sample_box_points``.

    Args:
        gt: ``N x 1 x H x W`` bool.

    Returns:
        ``N x 2 x 2`` float and ``N x 2`` int32.
    """
    from sam2.modeling.sam2_utils import mask_to_box

    n, _, h, w = gt.shape
    box = mask_to_box(gt.bool()).float()  # N x 1 x 4
    labels = torch.tensor([[2, 3]], dtype=torch.int32, device=gt.device).repeat(n, 1)
    if noise > 0:
        bound = torch.tensor(float(noise_max_px), device=gt.device)
        max_dx = torch.min((box[..., 2] - box[..., 0]) * noise, bound)
        max_dy = torch.min((box[..., 3] - box[..., 1]) * noise, bound)
        jitter = 2 * _rand(generator, n, 1, 4, device=gt.device) - 1
        box = box + jitter * torch.stack((max_dx, max_dy, max_dx, max_dy), dim=-1)
        bounds = torch.tensor([w, h, w, h], device=gt.device, dtype=box.dtype) - 1
        box = torch.maximum(torch.minimum(box, bounds), torch.zeros_like(bounds))
    return box.reshape(-1, 2, 2), labels


def _randint(generator: torch.Generator, low: int, high: int) -> int:
    """Uniform integer in ``[low, high]``."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def _choose(generator: torch.Generator, options: list[int], k: int) -> list[int]:
    """``k`` of ``options`` without replacement, in the drawn order."""
    perm = torch.randperm(len(options), generator=generator)[:k]
    return [options[int(i)] for i in perm]


def sample_plan(
    recipe: VideoRecipe,
    gt_per_frame: list[torch.Tensor],
    generator: torch.Generator,
    *,
    eligible: list[int] | None = None,
) -> ClipPlan:
    """Draw the prompts of one clip step as ``SAM2Train.prepare_prompt_inputs`` does in training.

    Args:
        gt_per_frame: per frame, ``N x 1 x S x S`` bool.
        eligible: the frames that may be prompted or corrected besides frame 0 (annotated ones);
            None: all.
    """
    num_frames = len(gt_per_frame)
    others = [t for t in range(1, num_frames) if eligible is None or t in eligible]
    use_points = bool(_rand(generator, 1, device=torch.device("cpu")) < recipe.point_prob)
    n_init = recipe.num_init_cond_frames if num_frames > 1 else 1
    n_correct = recipe.num_frames_to_correct if num_frames > 1 else 1
    if num_frames == 1:
        use_points = True
    if recipe.rand_init_cond_frames and n_init > 1:
        n_init = _randint(generator, 1, n_init)
    n_init = min(n_init, 1 + len(others))
    if use_points and recipe.rand_frames_to_correct and n_correct > n_init:
        n_correct = _randint(generator, n_init, n_correct)
    init = [0] + _choose(generator, others, n_init - 1)
    plan = ClipPlan(use_points=use_points, init_cond_frames=init, correct_frames=[])
    for t in init:
        gt = gt_per_frame[t]
        if not use_points:
            plan.mask_inputs[t] = gt.float()
            continue
        if bool(_rand(generator, 1, device=torch.device("cpu")) < recipe.box_prob):
            coords, labels = box_prompt(
                gt, generator, noise=recipe.box_noise, noise_max_px=recipe.box_noise_max_px
            )
        else:
            coords, labels = error_click(gt, None, generator)
        plan.point_inputs[t] = {"point_coords": coords, "point_labels": labels}
    if use_points:
        rest = [t for t in others if t not in init]
        extra = min(max(0, n_correct - n_init), len(rest))
        plan.correct_frames = init + _choose(generator, rest, extra)
    return plan


def generator_clicker(recipe: VideoRecipe, generator: torch.Generator) -> Clicker:
    """Correction clicks as SAM 2 trains: from the error region, or with
    ``click_from_gt_prob`` from the ground truth (``pred`` ignored)."""

    def click(gt: torch.Tensor, pred: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        from_gt = recipe.click_from_gt_prob > 0 and bool(
            _rand(generator, 1, device=torch.device("cpu")) < recipe.click_from_gt_prob
        )
        return error_click(gt, None if from_gt else pred, generator)

    return click


def flat_frames(frames: torch.Tensor) -> torch.Tensor:
    """``B x T x 3 x S x S`` clips as the ``T*B`` images SAM 2 encodes, frame-major."""
    return frames.transpose(0, 1).flatten(0, 1)


def backbone_features(model: torch.nn.Module, backbone_out: dict[str, Any]) -> tuple:
    """``(vision_feats, vision_pos_embeds, feat_sizes)`` of ``forward_image`` output, in SAM 2's
    ``(HW) x images x C`` layout."""
    _, feats, pos, sizes = model._prepare_backbone_features(backbone_out)
    return feats, pos, sizes


def encode_clip_frames(
    model: torch.nn.Module,
    images: torch.Tensor,
    *,
    encoder_frozen: bool,
    cache: Any = None,
) -> dict[str, Any]:
    """``model.forward_image`` of the flat frames. A frozen encoder runs without a graph (its
    output equal) or comes from ``cache`` (an :class:`~samtune.segmenter.cache.EmbeddingCache`,
    one entry per frame); ``conv_s0``/``conv_s1`` keep their gradients either way."""
    if not encoder_frozen:
        return model.forward_image(images)
    if cache is not None:
        levels = cache.levels(model, images)
    else:
        with torch.no_grad():
            levels = list(model.image_encoder(images)["backbone_fpn"])
        if getattr(model, "use_high_res_features_in_sam", False):
            levels[0] = model.sam_mask_decoder.conv_s0(levels[0])
            levels[1] = model.sam_mask_decoder.conv_s1(levels[1])
    encoding = model.image_encoder.neck.position_encoding
    with torch.no_grad():
        pos = [encoding(x).to(x.dtype) for x in levels]
    return {"backbone_fpn": levels, "vision_pos_enc": pos}


def _correct(
    model: torch.nn.Module,
    recipe: VideoRecipe,
    clicker: Clicker,
    is_init_cond: bool,
    point_inputs: dict[str, torch.Tensor] | None,
    gt: torch.Tensor,
    high_res_features: Any,
    pix_feat: torch.Tensor,
    sam_outputs: tuple,
    out: dict[str, Any],
) -> tuple[dict[str, torch.Tensor] | None, tuple]:
    from sam2.utils.misc import concat_points

    low_multi, high_multi, ious, low, high, _, obj_scores = sam_outputs
    steps = {"masks": [low], "high": [high], "multi": [low_multi], "multi_high": [high_multi]}
    steps.update({"ious": [ious], "points": [point_inputs], "scores": [obj_scores]})
    for _ in range(recipe.correction_clicks):
        coords, labels = clicker(gt, high > 0)
        point_inputs = concat_points(point_inputs, coords, labels)
        multimask = model._use_multimask(is_init_cond, point_inputs)
        kwargs = dict(
            backbone_features=pix_feat,
            point_inputs=point_inputs,
            mask_inputs=low,
            high_res_features=high_res_features,
            multimask_output=multimask,
        )
        if recipe.checkpoint_correction_steps and not multimask and torch.is_grad_enabled():
            sam_outputs = checkpoint(model._forward_sam_heads, use_reentrant=False, **kwargs)
        else:
            sam_outputs = model._forward_sam_heads(**kwargs)
        low_multi, high_multi, ious, low, high, _, obj_scores = sam_outputs
        for key, value in zip(
            ("masks", "high", "multi", "multi_high", "ious", "points", "scores"),
            (low, high, low_multi, high_multi, ious, point_inputs, obj_scores),
        ):
            steps[key].append(value)
    out["multistep_pred_masks"] = torch.cat(steps["masks"], dim=1)
    out["multistep_pred_masks_high_res"] = torch.cat(steps["high"], dim=1)
    out["multistep_pred_multimasks"] = steps["multi"]
    out["multistep_pred_multimasks_high_res"] = steps["multi_high"]
    out["multistep_pred_ious"] = steps["ious"]
    out["multistep_point_inputs"] = steps["points"]
    out["multistep_object_score_logits"] = steps["scores"]
    return point_inputs, sam_outputs


def track_clip(
    model: torch.nn.Module,
    features: tuple,
    gt_per_frame: list[torch.Tensor],
    obj_video: torch.Tensor,
    num_videos: int,
    plan: ClipPlan,
    recipe: VideoRecipe,
    clicker: Clicker,
) -> list[dict[str, Any]]:
    """Track the objects of a batch of clips through every frame (see the module docstring).

    Args:
        model: the ``SAM2Base``.
        features: :func:`backbone_features` of the ``T*B`` frame-major images.
        gt_per_frame: per frame, ``N x 1 x S x S`` bool masks of the batch's N objects.
        obj_video: ``N`` long, the clip of each object.
        num_videos: B.
        plan: from :func:`sample_plan`.
        clicker: correction clicks ``(gt, pred) -> (points, labels)``.

    Returns:
        Per frame (time order), SAM 2's output dict (``multistep_*`` of every prediction step,
        ``pred_masks``, ``pred_masks_high_res``, memory features).
    """
    feats, pos, sizes = features
    num_frames = len(gt_per_frame)
    output_dict: dict[str, dict[int, Any]] = {
        "cond_frame_outputs": {},
        "non_cond_frame_outputs": {},
    }
    for t in processing_order(plan, num_frames):
        img_ids = t * num_videos + obj_video
        cur_feats = [x[:, img_ids] for x in feats]
        cur_pos = [x[:, img_ids] for x in pos]
        is_init = t in plan.init_cond_frames
        point_inputs = plan.point_inputs.get(t)
        out, sam_outputs, high_res_features, pix_feat = model._track_step(
            t,
            is_init,
            cur_feats,
            cur_pos,
            sizes,
            point_inputs,
            plan.mask_inputs.get(t),
            output_dict,
            num_frames,
            False,
            None,
        )
        low_multi, high_multi, ious, low, high, obj_ptr, obj_scores = sam_outputs
        out["multistep_pred_masks"] = low
        out["multistep_pred_masks_high_res"] = high
        out["multistep_pred_multimasks"] = [low_multi]
        out["multistep_pred_multimasks_high_res"] = [high_multi]
        out["multistep_pred_ious"] = [ious]
        out["multistep_point_inputs"] = [point_inputs]
        out["multistep_object_score_logits"] = [obj_scores]
        if t in plan.correct_frames:
            point_inputs, final = _correct(
                model,
                recipe,
                clicker,
                is_init,
                point_inputs,
                gt_per_frame[t],
                high_res_features,
                pix_feat,
                sam_outputs,
                out,
            )
            _, _, _, low, high, obj_ptr, obj_scores = final
        out["pred_masks"] = low
        out["pred_masks_high_res"] = high
        out["obj_ptr"] = obj_ptr
        model._encode_memory_in_output(cur_feats, sizes, point_inputs, True, high, obj_scores, out)
        as_cond = is_init or (recipe.add_corrected_as_cond and t in plan.correct_frames)
        output_dict["cond_frame_outputs" if as_cond else "non_cond_frame_outputs"][t] = out
    frames = {**output_dict["cond_frame_outputs"], **output_dict["non_cond_frame_outputs"]}
    return [frames[t] for t in range(num_frames)]


LOSS_TERMS = ("loss", "focal", "dice", "iou", "object_score")


def clip_loss(
    outputs: list[dict[str, Any]],
    gt_per_frame: list[torch.Tensor],
    loss_fn: torch.nn.Module,
    supervised: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """SAM 2's ``MultiStepMultiMasksAndIous``: ``loss_fn`` (a ``SAM2Loss``) of every step of
    every frame, summed; each term divided by the batch's number of objects N.

    Args:
        outputs: from :func:`track_clip`.
        gt_per_frame: per frame, ``N x 1 x S x S`` bool.
        supervised: ``T x N`` bool, the (frame, object) pairs with ground truth; None: all.
    """
    n = int(gt_per_frame[0].shape[0])
    total: dict[str, torch.Tensor] = {}
    for t, (out, gt) in enumerate(zip(outputs, gt_per_frame)):
        rows = None if supervised is None else supervised[t].nonzero()[:, 0]
        if rows is not None and rows.numel() == 0:
            continue
        scale = 1.0 if rows is None else rows.numel() / n
        for masks, ious, scores in zip(
            out["multistep_pred_multimasks_high_res"],
            out["multistep_pred_ious"],
            out["multistep_object_score_logits"],
        ):
            target = gt[:, 0]
            if rows is not None:
                masks, ious, scores, target = masks[rows], ious[rows], scores[rows], target[rows]
            terms = loss_fn(masks, ious, scores, target)
            for k in LOSS_TERMS:
                total[k] = total.get(k, 0.0) + terms[k] * scale
    return total


def checkpoint_memory_attention(model: torch.nn.Module) -> bool:
    """Recompute the memory attention in the backward pass from now on (under grad only);
    True when it was switched on here, False when it was on already or the model has none."""
    attn = getattr(model, "memory_attention", None)
    if attn is None or getattr(attn, "_samtune_checkpointed", False):
        return False
    plain = attn.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        if torch.is_grad_enabled():
            return checkpoint(plain, *args, use_reentrant=False, **kwargs)
        return plain(*args, **kwargs)

    attn.forward = forward
    attn._samtune_checkpointed = True
    return True
