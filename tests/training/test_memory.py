"""The training step's memory estimate (samtune.training.memory) and the check before training
(samtune.training.memory_check)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from samtune.training.memory import (
    MemoryBudgetError,
    StepMemoryInputs,
    changes_to_fit,
    encoder_units,
    estimate_step_memory,
)
from samtune.training.memory_check import fit_memory, module_inputs, step_inputs

BASE = StepMemoryInputs(
    image_size=1024,
    batch=2,
    objects_per_image=16,
    prompt_steps=8,
    encoder="lora",
    total_params=46_000_000,
    trainable_params=4_500_000,
    encoder_units=30.0,
)


def total(**changes) -> float:
    return estimate_step_memory(replace(BASE, **changes)).total


@pytest.mark.parametrize(
    ("key", "values"),
    [
        ("image_size", [128, 256, 512, 1024]),
        ("batch", [1, 2, 4, 8]),
        ("objects_per_image", [1, 4, 16, 64]),
        ("prompt_steps", [1, 2, 4, 8]),
    ],
)
def test_estimate_grows_with_each_size(key, values):
    for encoder in ("frozen", "lora", "full"):
        for ckpt in (False, True):
            estimates = [
                total(
                    **{key: v},
                    encoder=encoder,
                    activation_checkpointing=ckpt,
                    checkpoint_prompt_steps=ckpt,
                )
                for v in values
            ]
            assert all(a < b for a, b in zip(estimates, estimates[1:])), (key, encoder, ckpt)


def test_checkpointing_and_adapter_order():
    plain = total()
    assert total(activation_checkpointing=True) < plain
    assert total(checkpoint_prompt_steps=True) < plain
    both = total(activation_checkpointing=True, checkpoint_prompt_steps=True)
    assert both < min(total(activation_checkpointing=True), total(checkpoint_prompt_steps=True))
    assert total(encoder="frozen") < plain < total(encoder="full", trainable_params=46_000_000)
    # activation checkpointing does nothing to a frozen encoder (it has no graph)
    assert total(encoder="frozen", activation_checkpointing=True) == total(encoder="frozen")
    parts = estimate_step_memory(BASE)
    assert parts.total == pytest.approx(
        parts.weights + parts.optimizer + parts.encoder + parts.decoder + parts.fixed
    )
    assert parts.weights == 4 * BASE.total_params and parts.optimizer == 12 * 4_500_000


def test_calibration_matches_the_measured_1024px_peaks():
    """docs/benchmarks/cpu-1024px-train-memory.json: tiny, 1024 px, batch 4, 16 objects x 3."""
    tiny = replace(
        BASE,
        batch=4,
        objects_per_image=4,
        prompt_steps=3,
        total_params=38_962_498,
        trainable_params=4_441_745,
        encoder_units=24.0,
    )
    measured_mb = {
        (False, False): 15553,
        (True, False): 10002,
        (True, True): 6258,
    }
    for (act, steps), mb in measured_mb.items():
        inputs = replace(tiny, activation_checkpointing=act, checkpoint_prompt_steps=steps)
        assert estimate_step_memory(inputs).total / 2**20 == pytest.approx(mb, rel=0.25)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="batch must be a positive integer"):
        replace(BASE, batch=0)
    with pytest.raises(ValueError, match="encoder must be frozen, lora or full"):
        replace(BASE, encoder="adapter")


def test_changes_to_fit_take_the_free_switches_first():
    plain = estimate_step_memory(BASE).total
    assert changes_to_fit(BASE, plain) == []
    steps_only = estimate_step_memory(replace(BASE, checkpoint_prompt_steps=True)).total
    (change,) = changes_to_fit(BASE, steps_only)
    assert (change.key, change.value) == ("speed.checkpoint_prompt_steps", True)
    both = replace(BASE, checkpoint_prompt_steps=True, activation_checkpointing=True)
    keys = [c.key for c in changes_to_fit(BASE, estimate_step_memory(both).total)]
    assert keys == ["speed.checkpoint_prompt_steps", "speed.activation_checkpointing"]
    fewer = replace(both, objects_per_image=4, batch=1)
    changes = changes_to_fit(BASE, estimate_step_memory(fewer).total)
    assert {c.key: c.value for c in changes}["prompts.max_objects_per_image"] == 4
    assert {c.key: c.value for c in changes}["data.batch_size"] == 1
    assert estimate_step_memory(changes[-1].inputs).total <= estimate_step_memory(fewer).total
    assert changes_to_fit(BASE, 1e6) is None  # less than the weights: nothing fits


@pytest.fixture
def smoke_run():
    """The smoke experiment's config and its built module (real tiny model at 128 px)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from samtune.cli._hydra import CONFIG_DIR
    from samtune.training.run import build_module

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "train", overrides=["experiment=smoke", "adapter=lora"], return_hydra_config=True
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, build_module(cfg)


def test_over_budget_stops_naming_the_settings_or_applies_them(smoke_run):
    cfg, module = smoke_run
    # the real tiny model: widths 96/192/384/768, 1/2/7/2 blocks at strides 4/8/16/32
    units = 96 / 16 + 2 * 192 / 64 + 7 * 384 / 256 + 2 * 768 / 1024
    assert encoder_units(module.model) == pytest.approx(units)

    inputs = step_inputs(cfg, module, "32-true")
    need = estimate_step_memory(inputs).total
    assert fit_memory(cfg, module, "32-true", budget=need) == []  # fits: nothing to do
    budget = estimate_step_memory(
        replace(inputs, checkpoint_prompt_steps=True, activation_checkpointing=True)
    ).total
    with pytest.raises(MemoryBudgetError) as err:
        fit_memory(cfg, module, "32-true", budget=budget)
    text = str(err.value)
    assert "sam2.1_hiera_tiny @ 128 px, adapter=lora, batch 2, 4 objects x 3 prompt steps" in text
    assert f"needs about {need / 1e9:.1f} GB" in text
    assert "speed.checkpoint_prompt_steps=true speed.activation_checkpointing=true" in text
    assert "speed.fit_memory=auto" in text
    assert not module.checkpoint_prompt_steps  # the check changes nothing

    with pytest.raises(MemoryBudgetError, match="no setting of speed.checkpoint_prompt_steps"):
        fit_memory(cfg, module, "32-true", budget=1e6)

    cfg.speed.fit_memory = "auto"
    changes = fit_memory(cfg, module, "32-true", budget=budget)
    assert [c.key for c in changes] == [
        "speed.checkpoint_prompt_steps",
        "speed.activation_checkpointing",
    ]
    assert cfg.speed.checkpoint_prompt_steps is True and cfg.speed.activation_checkpointing is True
    assert module.checkpoint_prompt_steps
    applied = module_inputs(module, batch=2, objects_per_image=4, bf16=False)
    assert applied.activation_checkpointing and applied.checkpoint_prompt_steps

    cfg.speed.fit_memory = "off"
    assert fit_memory(cfg, module, "32-true", budget=1.0) == []
    cfg.speed.fit_memory = "sometimes"
    with pytest.raises(ValueError, match="speed.fit_memory must be one of check, auto, off"):
        fit_memory(cfg, module, "32-true", budget=1.0)


def test_on_an_uncalibrated_gpu_the_check_warns_and_uses_the_local_rank(
    smoke_run, monkeypatch, caplog
):
    import samtune.training.memory_check as memory_check
    from samtune.training.memory_check import calibrated, training_device

    cfg, module = smoke_run
    cfg.trainer.accelerator = "gpu"
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert training_device(cfg) == "cuda:3"
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    assert training_device(cfg) == "cuda:1"
    assert calibrated("cpu")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    assert not calibrated("cuda:1")  # nothing has been measured on a GPU yet
    inputs = step_inputs(cfg, module, "32-true")
    budget = estimate_step_memory(
        replace(inputs, checkpoint_prompt_steps=True, activation_checkpointing=True)
    ).total
    with caplog.at_level("WARNING", logger="samtune.training.memory_check"):
        assert fit_memory(cfg, module, "32-true", budget=budget) == []
    assert "has not been calibrated on this GPU kind, so training goes on" in caplog.text
    assert "cuda:1" in caplog.text and "speed.checkpoint_prompt_steps=true" in caplog.text
    # once the kind is calibrated, the same step stops as on the CPU
    monkeypatch.setattr(memory_check, "CALIBRATED_GPUS", ("H100",))
    assert calibrated("cuda:1")
    with pytest.raises(MemoryBudgetError, match="speed.fit_memory=auto"):
        fit_memory(cfg, module, "32-true", budget=budget)


CLIP = replace(
    BASE,
    image_size=512,
    batch=1,
    objects_per_image=3,
    prompt_steps=8 + 2 * 7,
    frames=8,
    correction_frames=2,
    clip=True,
)


def clip_total(**changes) -> float:
    return estimate_step_memory(replace(CLIP, **changes)).total


def test_clip_estimate_grows_with_frames_objects_and_corrections():
    for memory_ckpt in (False, True):
        by_frames = [
            clip_total(frames=t, prompt_steps=t + 2 * 7, memory_checkpointing=memory_ckpt)
            for t in (2, 4, 8, 16)
        ]
        assert all(a < b for a, b in zip(by_frames, by_frames[1:])), memory_ckpt
        by_objects = [
            clip_total(objects_per_image=n, memory_checkpointing=memory_ckpt) for n in (1, 2, 3, 8)
        ]
        assert all(a < b for a, b in zip(by_objects, by_objects[1:])), memory_ckpt
        by_corrections = [
            clip_total(
                correction_frames=k, prompt_steps=8 + k * 7, memory_checkpointing=memory_ckpt
            )
            for k in (0, 1, 2)
        ]
        assert all(a < b for a, b in zip(by_corrections, by_corrections[1:])), memory_ckpt
    parts = estimate_step_memory(CLIP)
    assert parts.memory > 0 and estimate_step_memory(BASE).memory == 0
    assert parts.total == pytest.approx(
        parts.weights + parts.optimizer + parts.encoder + parts.decoder + parts.memory + parts.fixed
    )
    assert (
        "memory path" in parts.describe()
        and "memory path" not in estimate_step_memory(BASE).describe()
    )
    # every frame is an encoder input: T frames of one clip cost the encoder what T images do
    assert parts.encoder == pytest.approx(
        estimate_step_memory(replace(BASE, batch=8)).encoder * (512**2 / 1024**2)
    )
    # checkpointing the memory attention and the correction steps lowers the peak
    assert clip_total(memory_checkpointing=True) < clip_total()
    assert clip_total(checkpoint_prompt_steps=True) < clip_total()
    with pytest.raises(ValueError, match="correction_frames must be in"):
        replace(CLIP, correction_frames=9)


def test_clip_changes_to_fit_name_the_clip_settings():
    both = replace(
        CLIP, checkpoint_prompt_steps=True, activation_checkpointing=True, memory_checkpointing=True
    )
    changes = changes_to_fit(CLIP, estimate_step_memory(both).total)
    assert [c.key for c in changes] == [
        "training.recipe.checkpoint_correction_steps",
        "speed.activation_checkpointing",
    ]
    assert changes[-1].inputs.memory_checkpointing
    one = replace(both, objects_per_image=1)
    changes = changes_to_fit(CLIP, estimate_step_memory(one).total)
    assert {c.key: c.value for c in changes}["data.max_num_objects"] == 1
    # a frozen encoder: the switch still checkpoints the memory attention
    frozen = replace(CLIP, encoder="frozen", trainable_params=1_000_000)
    need = estimate_step_memory(replace(frozen, memory_checkpointing=True)).total
    (change,) = changes_to_fit(replace(frozen, correction_frames=0, prompt_steps=8), need)
    assert change.key == "speed.activation_checkpointing"


@pytest.fixture
def video_run():
    """``training=video`` on clip data: its config and its built VideoModule (tiny, 128 px)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from samtune.cli._hydra import CONFIG_DIR
    from samtune.training.run import build_module

    overrides = [
        "experiment=smoke",
        "data=vos",
        "data.root=/nonexistent",  # the check reads the settings; nothing is read from it
        "training=video",
        "adapter=lora",
        "adapter.memory=true",
    ]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, build_module(cfg)


def test_video_module_check_counts_clip_steps(video_run):
    from samtune.training.memory_check import clip_module_inputs

    cfg, module = video_run
    inputs = step_inputs(cfg, module, "32-true")
    frames, objects = int(cfg.data.num_frames), int(cfg.data.max_num_objects)
    recipe = module.recipe
    assert inputs.is_clip and inputs.frames == frames and inputs.objects_per_image == objects
    assert inputs.correction_frames == recipe.num_frames_to_correct
    assert inputs.prompt_steps == frames + recipe.num_frames_to_correct * recipe.correction_clicks
    assert not inputs.memory_checkpointing
    need = estimate_step_memory(inputs).total
    # more frames or objects in the data config: a larger estimate before training
    for key in ("num_frames", "max_num_objects"):
        cfg.data[key] = int(cfg.data[key]) * 2
        assert estimate_step_memory(step_inputs(cfg, module, "32-true")).total > need, key
        cfg.data[key] = int(cfg.data[key]) // 2
    assert fit_memory(cfg, module, "32-true", budget=need) == []
    ckpt = estimate_step_memory(
        replace(
            inputs,
            checkpoint_prompt_steps=True,
            activation_checkpointing=True,
            memory_checkpointing=True,
        )
    ).total
    with pytest.raises(MemoryBudgetError) as err:
        fit_memory(cfg, module, "32-true", budget=ckpt)
    text = str(err.value)
    assert f"clip steps of 1 clip(s) x {frames} frames, {objects} objects" in text
    assert (
        "training.recipe.checkpoint_correction_steps=true speed.activation_checkpointing=true"
        in text
    )
    with pytest.raises(MemoryBudgetError, match="data.max_num_objects or data.batch_size"):
        fit_memory(cfg, module, "32-true", budget=1e6)

    cfg.speed.fit_memory = "auto"
    fit_memory(cfg, module, "32-true", budget=ckpt)
    assert module.recipe.checkpoint_correction_steps and module.memory_checkpointing
    assert module.model.memory_attention._samtune_checkpointed
    applied = clip_module_inputs(module, batch=1, frames=frames, objects=objects, bf16=False)
    assert applied.memory_checkpointing and applied.activation_checkpointing
    assert applied.checkpoint_prompt_steps
