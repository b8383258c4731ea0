"""Many processes (DDP): rank-sharded samplers, per-image prompt streams, object-weighted loss,
and 2 ranks x batch b against 1 process x batch 2b end to end (gloo, CPU)."""

from __future__ import annotations

import copy
import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from samtune.data.datamodules.volumes import VolumeGroupSampler
from samtune.data.samplers import ShardedSampler
from samtune.prompts import PromptSimulator, PromptStreams
from samtune.training.distributed import (
    check_launch,
    mean_over_objects,
    resolve_find_unused,
)
from tests.helpers import REPO


def _batches(order: list[int], size: int) -> list[list[int]]:
    return [order[i : i + size] for i in range(0, len(order), size)]


# --- samplers ------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [16, 13])
def test_two_ranks_batch_b_hold_the_items_of_one_process_batch_2b(length):
    for epoch in (0, 3):
        single = ShardedSampler(length, shuffle=True, seed=5)
        single.set_epoch(epoch)
        ranks = [
            ShardedSampler(length, shuffle=True, seed=5, num_replicas=2, rank=r) for r in (0, 1)
        ]
        for s in ranks:
            s.set_epoch(epoch)
        one = _batches(list(single), 4)
        two = [_batches(list(s), 2) for s in ranks]
        assert len(two[0]) == len(two[1])  # every rank takes the same number of steps
        assert len(ranks[0]) == len(list(ranks[0]))
        for k, batch in enumerate(one):
            if len(batch) == 4:
                assert sorted(two[0][k] + two[1][k]) == sorted(batch), (epoch, k)
        # torch's own DistributedSampler gives the same shards, so either may be in use
        for r, s in enumerate(ranks):
            ref = DistributedSampler(range(length), num_replicas=2, rank=r, shuffle=True, seed=5)
            ref.set_epoch(epoch)
            assert list(s) == list(ref)
    first, again = (
        ShardedSampler(16, shuffle=True, seed=5),
        ShardedSampler(16, shuffle=True, seed=5),
    )
    again.set_epoch(1)
    assert list(first) != list(again)  # a new order each epoch


def test_evaluation_shards_see_every_item_exactly_once():
    shards = [
        list(ShardedSampler(7, shuffle=False, num_replicas=3, rank=r, pad=False)) for r in range(3)
    ]
    assert sorted(i for s in shards for i in s) == list(range(7))
    assert [len(s) for s in shards] == [3, 2, 2]
    with pytest.raises(ValueError, match="rank must be in"):
        ShardedSampler(7, shuffle=False, num_replicas=2, rank=2)


def test_volume_group_sampler_splits_each_epoch_across_ranks():
    volume_of = ["a"] * 5 + ["b"] * 3 + ["c"] * 4 + ["d"] * 2
    whole = VolumeGroupSampler(volume_of, group=2, seed=0)
    ranks = [VolumeGroupSampler(volume_of, group=2, seed=0, num_replicas=2, rank=r) for r in (0, 1)]
    for epoch in (0, 1):
        for s in (whole, *ranks):
            s.set_epoch(epoch)
        order = list(whole)
        shards = [list(s) for s in ranks]
        assert shards[0] == order[0::2] and shards[1] == order[1::2]
        assert isinstance(ranks[0], DistributedSampler)  # Lightning keeps it, does not wrap it


def test_each_rank_augments_with_its_own_stream_and_rank_0_as_a_single_process():
    from types import SimpleNamespace

    from samtune.data import SyntheticDataModule

    def draws(rank: int | None) -> torch.Tensor:
        augment = {"hflip": 0.5, "vflip": 0.5, "rot90": 0.5, "brightness_contrast": 0.5}
        dm = SyntheticDataModule(image_size=64, num_train=4, seed=3, augment=augment)
        if rank is not None:
            dm.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        dataset = dm.train_dataloader().dataset
        return torch.stack([dataset[0]["image"] for _ in range(6)])  # one image, 6 draws

    assert torch.equal(draws(None), draws(0))
    assert not torch.equal(draws(0), draws(1))


# --- prompts and reductions ----------------------------------------------------------------


def _object_masks(n_objects: list[int], size: int = 24) -> list[torch.Tensor]:
    rng = np.random.default_rng(0)
    out = []
    for n in n_objects:
        m = np.zeros((n, size, size), dtype=bool)
        for j in range(n):
            y, x = rng.integers(0, size - 6, size=2)
            m[j, y : y + rng.integers(3, 7), x : x + rng.integers(3, 7)] = True
        out.append(torch.from_numpy(m))
    return out


def _draw(sim, streams, masks):
    chosen = streams.select_objects(sim, masks)
    gt = torch.cat(chosen)
    idx = torch.cat([torch.full((len(m),), i) for i, m in enumerate(chosen)])
    first = streams.initial(sim, gt, idx)
    clicks = streams.correction(sim, torch.zeros_like(gt), gt, idx)
    return chosen, first, clicks


@pytest.mark.parametrize("box_prob", [0.0, 1.0])
def test_keyed_prompts_of_an_image_do_not_depend_on_its_batch(box_prob):
    sim = PromptSimulator(box_prob=box_prob, max_objects_per_image=2)
    masks = _object_masks([3, 1, 2, 4])
    indices = [10, 11, 12, 13]
    whole = _draw(sim, PromptStreams.keyed(seed=1, epoch=2, batch_index=0, indices=indices), masks)
    halves = [
        _draw(
            sim,
            PromptStreams.keyed(seed=1, epoch=2, batch_index=0, indices=indices[r::2]),
            masks[r::2],
        )
        for r in (0, 1)
    ]
    rows = np.cumsum([0] + [len(m) for m in whole[0]])
    for i in range(4):
        part, j = halves[i % 2], i // 2
        part_rows = np.cumsum([0] + [len(m) for m in part[0]])
        assert torch.equal(whole[0][i], part[0][j])  # the same objects chosen
        a, b = slice(rows[i], rows[i + 1]), slice(part_rows[j], part_rows[j + 1])
        for name in ("point_coords", "point_labels", "boxes"):
            mine, theirs = getattr(whole[1], name), getattr(part[1], name)
            assert (mine is None) == (theirs is None)
            if mine is not None:
                assert torch.equal(mine[a], theirs[b]), name
        assert torch.equal(whole[2][0][a], part[2][0][b]) and torch.equal(
            whole[2][1][a], part[2][1][b]
        )
    other_epoch = _draw(
        sim, PromptStreams.keyed(seed=1, epoch=3, batch_index=0, indices=indices), masks
    )
    assert not torch.equal(other_epoch[2][0], whole[2][0])


def test_object_weighted_loss_gives_the_gradient_of_the_mean_over_all_objects():
    torch.manual_seed(0)
    weight = torch.randn(3, requires_grad=True)
    data = [torch.randn(5, 3), torch.randn(2, 3)]  # two ranks, different object counts

    def per_object(x):
        return (x @ weight) ** 2

    (grad_single,) = torch.autograd.grad(per_object(torch.cat(data)).mean(), weight)
    counts = [len(x) for x in data]
    sums = {"loss": sum(float(per_object(x).mean().detach()) * len(x) for x in data)}

    def fake_all_reduce(t: torch.Tensor) -> torch.Tensor:  # the other rank's share added
        return torch.tensor([sum(counts), sums["loss"]], dtype=t.dtype)

    grads = []
    for x in data:
        loss, means, total = mean_over_objects(
            {"loss": per_object(x).mean()},
            len(x),
            reduce_sum=fake_all_reduce,
            world_size=2,
            names=("loss",),
        )
        assert total == 7 and torch.isclose(
            means["loss"].float(), per_object(torch.cat(data)).mean()
        )
        grads.append(torch.autograd.grad(loss, weight)[0])
    ddp_average = (grads[0] + grads[1]) / 2
    torch.testing.assert_close(ddp_average, grad_single, rtol=1e-6, atol=1e-7)
    naive = sum(torch.autograd.grad(per_object(x).mean(), weight)[0] for x in data) / 2
    assert not torch.allclose(naive, grad_single, rtol=1e-3)  # the mean of rank means is not


def test_find_unused():
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(REPO / "samtune" / "configs" / "trainer" / "ddp.yaml")
    assert cfg.strategy.find_unused_parameters is None
    assert resolve_find_unused(cfg, correction_clicks=0).strategy.find_unused_parameters is True
    assert resolve_find_unused(cfg, correction_clicks=7).strategy.find_unused_parameters is False
    assert cfg.strategy.find_unused_parameters is None  # not modified


def test_ranks_started_by_lightning_are_refused_inside_a_sweep(tmp_path):
    import lightning as L
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from samtune.cli._hydra import CONFIG_DIR

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", return_hydra_config=True)
    cfg.hydra.runtime.output_dir = str(tmp_path)
    sweep = copy.deepcopy(cfg)
    sweep.hydra.mode = RunMode.MULTIRUN
    HydraConfig.instance().set_config(cfg)
    two = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False)
    check_launch(two)  # a single run: Lightning may start the second rank
    HydraConfig.instance().set_config(sweep)
    with pytest.raises(ValueError, match="hydra/launcher=slurm"):
        check_launch(two)
    check_launch(L.Trainer(accelerator="cpu", devices=1, logger=False))


# --- end to end: 2 processes (gloo) against 1 --------------------------------------------

COMMON = [
    "experiment=smoke",
    "adapter=frozen",
    "data.augment=null",
    "data.num_train=8",
    "trainer.limit_train_batches=null",
    "trainer.max_epochs=2",
    "trainer.precision=32-true",
    "trainer.accelerator=cpu",
    "evaluate_after_training=false",
    "speed.embedding_cache=null",
    "logger=csv",
]
WEIGHTS_ATOL = 1e-5  # measured 1.5e-6 after 4 AdamW steps at lr 1e-4 (see README "Many GPUs")


def _train(args: list[str], run_dir: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", WANDB_MODE="offline")
    return subprocess.run(
        [sys.executable, "-m", "samtune.cli.train", *COMMON, *args, f"hydra.run.dir={run_dir}"],
        cwd=run_dir.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _column(run_dir: Path, name: str) -> list[float]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return [float(r[name]) for r in csv.DictReader(f) if r.get(name)]


def test_two_ranks_with_batch_2_train_like_one_process_with_batch_4(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    proc = _train(["data.batch_size=4"], one)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    proc = _train(["trainer=ddp", "trainer.devices=2", "data.batch_size=2"], two)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "Starting with 2 processes" in proc.stdout + proc.stderr
    assert proc.stdout.count("samtune: training finished") == 1  # the summary from rank 0 only

    loss_one, loss_two = _column(one, "train/loss_step"), _column(two, "train/loss_step")
    assert len(loss_one) == len(loss_two) == 4  # 8 images, 2 epochs, 4 optimiser steps
    np.testing.assert_allclose(loss_two, loss_one, rtol=1e-5)
    assert _column(two, "train/objects") == _column(one, "train/objects")
    np.testing.assert_allclose(_column(two, "val/miou"), _column(one, "val/miou"), atol=1e-4)

    def state(run_dir):
        ckpt = torch.load(
            run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
        )
        return ckpt["global_step"], ckpt["state_dict"]

    (step_one, w_one), (step_two, w_two) = state(one), state(two)
    assert step_one == step_two == 4
    assert w_one.keys() == w_two.keys()
    worst = max((w_one[k] - w_two[k]).abs().max().item() for k in w_one)
    print(f"max |w_1proc - w_2ranks| = {worst:.2e}")
    assert worst < WEIGHTS_ATOL
