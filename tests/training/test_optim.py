"""Optimiser parameter groups and the warm-up + cosine schedule."""

from __future__ import annotations

import math

import pytest
import torch

from samtune.training.optim import param_groups, warmup_cosine


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.image_encoder = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
        self.sam_mask_decoder = torch.nn.Linear(4, 2)
        self.frozen = torch.nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


def test_groups_split_encoder_decoder_and_decay():
    groups = {
        g["name"]: g for g in param_groups(_Toy(), lr=1e-3, encoder_lr_scale=0.1, weight_decay=0.05)
    }
    assert set(groups) == {"encoder_decay", "encoder_no_decay", "decoder_decay", "decoder_no_decay"}
    assert groups["encoder_decay"]["lr"] == pytest.approx(1e-4)
    assert groups["decoder_decay"]["lr"] == pytest.approx(1e-3)
    assert groups["encoder_decay"]["weight_decay"] == 0.05
    assert groups["encoder_no_decay"]["weight_decay"] == 0.0
    # encoder: Linear weight decays; Linear bias + LayerNorm weight/bias do not; frozen params absent
    assert (
        len(groups["encoder_decay"]["params"]) == 1
        and len(groups["encoder_no_decay"]["params"]) == 3
    )
    assert sum(len(g["params"]) for g in groups.values()) == 6


def test_warmup_then_cosine():
    kw = {"total_steps": 100, "warmup_fraction": 0.1, "min_lr_ratio": 0.01}
    assert warmup_cosine(0, **kw) == pytest.approx(0.1)
    assert warmup_cosine(9, **kw) == pytest.approx(1.0)
    mid = warmup_cosine(10 + 45, **kw)
    assert mid == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert warmup_cosine(100, **kw) == pytest.approx(0.01)
    values = [warmup_cosine(s, **kw) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))
