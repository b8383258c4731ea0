"""FLOP counting for SAM 2 models, from PyTorch's own per-operator formulas.

:class:`FlopCounter` adds up ``torch.utils.flop_counter``'s formulas (matmuls, convolutions,
attention, forward and backward) over everything run inside it, so it measures what a piece of
code really executes, including recomputation by activation checkpointing. Unlike
``FlopCounterMode`` it tracks no modules, so it also works under ``torch.no_grad`` and on the
``meta`` device, where counting costs no arithmetic. One multiply-add counts as two FLOPs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry, sdpa_backward_flop_count, sdpa_flop_count

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets, in TFLOP/s.
GPU_PEAK_BF16_TFLOPS: dict[str, float] = {
    "H200": 989.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,  # SXM
    "A100": 312.0,
    "L40S": 362.0,
    "A10": 125.0,
    "L4": 121.0,
}


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _cpu_flash_attention(query, key, value, *args, out_val=None, **kwargs) -> int:
    return sdpa_flop_count(_shape(query), _shape(key), _shape(value))


def _cpu_flash_attention_backward(
    grad_out, query, key, value, *args, out_val=None, **kwargs
) -> int:
    return sdpa_backward_flop_count(_shape(grad_out), _shape(query), _shape(key), _shape(value))


# torch's registry lacks the CPU kernels of scaled_dot_product_attention (on the meta device and on
# GPUs other kernels run, which it has); without these, attention would count 0 on the CPU.
_EXTRA_FORMULAS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_attention,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_attention_backward,
}


class FlopCounter(TorchDispatchMode):
    """Counts the FLOPs of every operator that runs inside ``with FlopCounter() as fc:``.

    Attributes:
        total: FLOPs counted so far.
    """

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: D105
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        formula = flop_registry.get(packet) or _EXTRA_FORMULAS.get(packet)
        if formula is not None:
            self.total += int(formula(*args, **kwargs, out_val=out))
        return out


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, int]:
    """Run ``fn(*args, **kwargs)`` and return its result and the FLOPs it executed."""
    with FlopCounter() as counter:
        result = fn(*args, **kwargs)
    return result, counter.total


@dataclass(frozen=True)
class ModelFlops:
    """Forward FLOPs of the two halves of a SAM 2 image model at one resolution.

    Attributes:
        encoder: image encoder (with ``conv_s0``/``conv_s1``) for one image.
        decoder_per_prompt: prompt encoder + mask decoder for one object with one click and
            multimask output.
    """

    encoder: int
    decoder_per_prompt: int

    @property
    def prompts_per_encoder_pass(self) -> float:
        """How many decoder passes cost as much as one encoder pass."""
        return self.encoder / max(1, self.decoder_per_prompt)


def model_flops(model: torch.nn.Module) -> ModelFlops:
    """Count the forward FLOPs of ``model`` (a ``SAM2Base``) at its ``image_size``.

    The model is moved to the ``meta`` device for the count (shapes only, no arithmetic), so pass
    a model you no longer need, e.g. a fresh ``build_sam2_model(name, image_size=...)``.
    """
    from samtune.segmenter.sam2 import decode, encode

    model = model.to("meta").eval()
    size = int(model.image_size)
    with torch.no_grad():
        images = torch.zeros(1, 3, size, size, device="meta")
        feats, enc = count_flops(encode, model, images)
        idx = torch.zeros(1, dtype=torch.long, device="meta")
        coords = torch.zeros(1, 1, 2, device="meta")
        labels = torch.ones(1, 1, dtype=torch.int32, device="meta")
        _, dec = count_flops(decode, model, feats, idx, coords, labels, multimask_output=True)
    return ModelFlops(encoder=enc, decoder_per_prompt=dec)


def gpu_peak_bf16_tflops(device_name: str) -> float | None:
    """Dense bf16 peak of a GPU from its name (``torch.cuda.get_device_name()``), or None."""
    for key, peak in GPU_PEAK_BF16_TFLOPS.items():
        if key.lower() in device_name.lower():
            return peak
    return None
