"""Optimiser parameter groups and the warm-up + cosine schedule."""

from __future__ import annotations

import math

import pytest
import torch

from samtune.training.optim import param_groups, warmup_cosine, warmup_cosine_scheduler


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


def _documented_multiplier(step: int, total: int, warmup_fraction: float, ratio: float) -> float:
    """The schedule as OptimConfig and warmup_cosine document it, written out independently."""
    warmup = 0 if warmup_fraction == 0 else max(1, round(total * warmup_fraction))
    if step < warmup:
        return (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return ratio + (1 - ratio) * (1 + math.cos(math.pi * p)) / 2


def _toy_optimizer() -> torch.optim.Optimizer:
    groups = param_groups(_Toy(), lr=1e-3, encoder_lr_scale=0.1, weight_decay=0.05)
    return torch.optim.SGD(groups, lr=1e-3)


@pytest.mark.parametrize(("total", "warmup_fraction"), [(23, 0.1), (40, 0.0), (7, 1.0), (1, 0.05)])
def test_scheduler_gives_every_group_its_own_warmup_and_relative_floor(total, warmup_fraction):
    opt = _toy_optimizer()
    base = {g["name"]: g["lr"] for g in opt.param_groups}
    assert base["encoder_decay"] == pytest.approx(1e-4) and base["decoder_decay"] == 1e-3
    sched = warmup_cosine_scheduler(
        opt, total_steps=total, warmup_fraction=warmup_fraction, min_lr_ratio=0.05
    )
    for step in range(total + 3):  # past the end the floor holds
        factor = _documented_multiplier(step, total, warmup_fraction, 0.05)
        for group in opt.param_groups:
            assert group["lr"] == pytest.approx(base[group["name"]] * factor, rel=1e-12), step
        opt.step()
        sched.step()
    assert all(g["lr"] == pytest.approx(0.05 * base[g["name"]]) for g in opt.param_groups)


def test_scheduler_state_resumes_the_curve():
    kw = {"total_steps": 30, "warmup_fraction": 0.2, "min_lr_ratio": 0.01}
    opt = _toy_optimizer()
    sched = warmup_cosine_scheduler(opt, **kw)
    for _ in range(11):
        opt.step()
        sched.step()
    saved_opt, saved_sched = opt.state_dict(), sched.state_dict()
    resumed_opt = _toy_optimizer()
    resumed = warmup_cosine_scheduler(resumed_opt, **kw)
    resumed_opt.load_state_dict(saved_opt)
    resumed.load_state_dict(saved_sched)
    for _ in range(5):
        assert [g["lr"] for g in resumed_opt.param_groups] == [g["lr"] for g in opt.param_groups]
        for o, s in ((opt, sched), (resumed_opt, resumed)):
            o.step()
            s.step()
    assert resumed.last_epoch == 16
