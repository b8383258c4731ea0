"""The promptable segmenter as a plain ``torch.nn.Module``: the seam between a model family and
the code that trains, evaluates and serves it.

Training (:mod:`samtune.training.interactive`), validation and evaluation
(:mod:`samtune.evaluation.protocols`) only ever call the methods of :class:`Segmenter`; they
never reach into a family's modules. Adding a model family (SAM 2.1 today; SAM 3's interactive
path next) means writing one subclass, in its own file under ``samtune/segmenter/``:

* ``image_size`` — the square input side S that images are resized to;
* :meth:`Segmenter.preprocess` — HxWx3 uint8 images to the family's normalised ``B x 3 x S x S``
  input, exactly as the family's own image predictor prepares them (evaluation uses it);
* :meth:`Segmenter.encode` — normalised images to image features. When the image encoder is
  frozen (none of its parameters requires a gradient) it must build no autograd graph through it,
  and it must use an embedding cache when the segmenter was given one;
* :meth:`Segmenter.decode` — features plus prompts for N objects (each pointing at its image)
  to a :class:`Decoded`: low-resolution mask logits, predicted IoUs and object-score logits.
  Coordinates are pixels of the S x S input frame; a previous :class:`Decoded`'s low-resolution
  logits are accepted back as ``mask_input`` (the interactive correction loop);
* optionally :meth:`Segmenter.upsample` when the family's logits are not upsampled bilinearly.

:class:`Features` is opaque to every caller: only the segmenter that made it reads its fields.
A family whose features have another shape subclasses it (or brings a class with the same
``select`` and ``to`` methods). :class:`Decoded` is shared: the loss and the protocols read it.
"""

from __future__ import annotations

import abc
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class Features:
    """Image features of a batch of images.

    Attributes:
        image_embed: lowest-resolution embedding, ``B x C x h x w`` (SAM 2.1: ``B x 256 x S/16 x
            S/16``, no-memory embedding added).
        high_res: higher-resolution levels used by the mask decoder (SAM 2.1: ``S/4`` and
            ``S/8``; empty for a family without them).
    """

    image_embed: torch.Tensor
    high_res: list[torch.Tensor]

    def select(self, idx: torch.Tensor) -> Features:
        """Features of the images ``idx`` (one row per object).

        When every object on a CPU belongs to one image, the rows are views of that image's
        features (``expand``) instead of copies: the decoder only adds to them, and at 1024 px a
        copy is 16 MB per object.
        """
        if idx.device.type == "cpu" and idx.numel() > 0 and bool((idx == idx[0]).all()):
            i, n = int(idx[0]), int(idx.numel())

            def rows(f: torch.Tensor) -> torch.Tensor:
                return f[i : i + 1].expand(n, *f.shape[1:])

            return Features(rows(self.image_embed), [rows(f) for f in self.high_res])
        return Features(self.image_embed[idx], [f[idx] for f in self.high_res])

    def to(self, *args, **kwargs) -> Features:
        """Move or cast every level like ``Tensor.to``."""
        return Features(
            self.image_embed.to(*args, **kwargs), [f.to(*args, **kwargs) for f in self.high_res]
        )


AUTOCAST_DEVICES = ("cpu", "cuda", "mps", "xpu")


@contextlib.contextmanager
def no_autocast() -> Iterator[None]:
    """Turn off every active autocast (CPU, CUDA, ...) inside the block.

    Evaluation, validation and the mask choice run in float32 whatever precision training uses:
    a bf16 IoU head rounds saturated scores to ties (its step is 0.125 near -17), and the chosen
    mask then depends on the precision rather than on the model.
    """
    with contextlib.ExitStack() as stack:
        for device in AUTOCAST_DEVICES:
            try:
                active = torch.is_autocast_enabled(device)
            except (RuntimeError, TypeError):  # a device type this build does not know
                continue
            if active:
                stack.enter_context(torch.autocast(device_type=device, enabled=False))
        yield


_FP32_STATE = threading.local()


def _fp32_pre_hook(module: torch.nn.Module, args: tuple) -> tuple:
    ctx = no_autocast()
    ctx.__enter__()
    stack = getattr(_FP32_STATE, "stack", None)
    if stack is None:
        stack = _FP32_STATE.stack = []
    stack.append(ctx)
    return tuple(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)


def _fp32_post_hook(module: torch.nn.Module, args: tuple, output: object) -> None:
    _FP32_STATE.stack.pop().__exit__(None, None, None)


def run_in_float32(module: torch.nn.Module) -> torch.nn.Module:
    """Make ``module``'s forward run outside autocast on float32 inputs (idempotent).

    Done with forward hooks, so the module, its parameters and its state-dict keys stay as they
    are. The autocast state is restored after the forward, also when it raises.
    """
    if not getattr(module, "_samtune_float32", False):
        module.register_forward_pre_hook(_fp32_pre_hook)
        module.register_forward_hook(_fp32_post_hook, always_call=True)
        module._samtune_float32 = True
    return module


def best_index(iou_pred: torch.Tensor) -> torch.Tensor:
    """Per row of ``N x M`` predicted IoUs, the index of the highest; ties go to the lowest index.

    The same choice as SAM 2's own ``torch.argmax`` over the candidates (which returns the first
    maximum), stated here rather than left to a library's tie rule.
    """
    top = iou_pred.max(dim=1, keepdim=True).values
    return (iou_pred == top).to(torch.uint8).argmax(dim=1)


@dataclass
class Decoded:
    """Mask decoder output for N objects.

    Attributes:
        low_res_logits: ``N x M x h x w`` mask logits (M = 3 with multimask output, else 1;
            SAM 2.1: ``h = w = S/4``).
        iou_pred: ``N x M`` predicted IoU of each mask.
        object_score_logits: ``N x 1`` logit that the object is present.
    """

    low_res_logits: torch.Tensor
    iou_pred: torch.Tensor
    object_score_logits: torch.Tensor

    def best(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per object, the mask logits and predicted IoU of the mask with the highest predicted IoU.

        A tie goes to the candidate with the lowest index (see :func:`best_index`).

        Returns:
            ``N x 1 x h x w`` logits and ``N`` predicted IoUs (the input itself when M = 1).

        Raises:
            ValueError: logits that are not ``N x M x H x W`` or IoUs that are not ``N x M``.
        """
        if self.low_res_logits.dim() != 4 or self.iou_pred.shape != self.low_res_logits.shape[:2]:
            raise ValueError(
                f"Decoded.best: expected N x M x H x W logits and N x M IoUs, got "
                f"{tuple(self.low_res_logits.shape)} and {tuple(self.iou_pred.shape)}"
            )
        idx = best_index(self.iou_pred)
        rows = torch.arange(idx.numel(), device=idx.device)
        return self.low_res_logits[rows, idx].unsqueeze(1), self.iou_pred[rows, idx]

    @classmethod
    def cat(cls, parts: list[Decoded]) -> Decoded:
        """The outputs of several decoder calls, objects concatenated in order."""
        if len(parts) == 1:
            return parts[0]
        return cls(
            torch.cat([p.low_res_logits for p in parts]),
            torch.cat([p.iou_pred for p in parts]),
            torch.cat([p.object_score_logits for p in parts]),
        )


def upsample_logits(low_res_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of ``N x M x h x w`` logits to ``size``, as SAM's predictors do."""
    return F.interpolate(low_res_logits.float(), size, mode="bilinear", align_corners=False)


class Segmenter(torch.nn.Module, abc.ABC):
    """A promptable image segmenter: encode images once, decode many prompts against them.

    Subclasses implement :meth:`preprocess`, :meth:`encode`, :meth:`decode` and set
    ``image_size`` (see the module documentation for what each must honour). Nothing else of a
    subclass is used by training, evaluation or serving code.

    Attributes:
        image_size: the square input side S, in pixels.
    """

    image_size: int

    @abc.abstractmethod
    def preprocess(self, images: list[np.ndarray]) -> torch.Tensor:
        """HxWx3 uint8 images of any sizes to the normalised ``B x 3 x S x S`` float input,
        as the family's own image predictor prepares them."""

    @abc.abstractmethod
    def encode(self, images: torch.Tensor) -> Features:
        """Features of normalised ``B x 3 x S x S`` images.

        No graph is built through a frozen image encoder; with an embedding cache, images seen
        before are not encoded again. Gradients flow into whatever trains after the encoder.
        """

    @abc.abstractmethod
    def decode(
        self,
        features: Features,
        img_idx: torch.Tensor,
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        *,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool,
    ) -> Decoded:
        """Masks for N objects in one batched call.

        Args:
            features: from :meth:`encode`, for the images of the batch.
            img_idx: ``N`` long, the image of each object (row of ``features``).
            coords: ``N x P x 2`` ``(x, y)`` clicks in input-frame pixels (0..S), or None.
            labels: ``N x P`` click labels (1 positive, 0 negative, -1 padding), or None.
            boxes: ``N x 4`` XYXY boxes in input-frame pixels, or None.
            mask_input: ``N x 1 x h x w`` low-resolution logits of a previous :class:`Decoded`,
                or None.
            multimask_output: three candidate masks per object instead of one.
        """

    def upsample(self, low_res_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``N x M x h x w`` low-resolution logits to float logits of ``size`` (threshold 0)."""
        return upsample_logits(low_res_logits, size)
