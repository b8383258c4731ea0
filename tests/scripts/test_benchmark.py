"""FLOP counting against hand-computed values, and the benchmark's --quick run end to end."""

from __future__ import annotations

import json

import pytest
import torch

from samtune.evaluation.evaluator import cpu_decode_chunk
from samtune.models import build_sam2_model
from samtune.segmenter.flops import FlopCounter, count_flops, gpu_peak_bf16_tflops, model_flops
from samtune.segmenter.sam2 import encode
from scripts.bench import cli as bench
from scripts.bench.common import SECTIONS, TRAIN_CONFIGS
from scripts.bench.compose import SYNTHETIC, compose_config, data_overrides, load_samples
from tests.helpers import REPO


def test_linear_and_conv_flops_match_hand_counts():
    lin = torch.nn.Linear(5, 7)
    x = torch.randn(3, 5, requires_grad=True)
    _, fwd = count_flops(lin, x)
    assert fwd == 2 * 3 * 5 * 7  # one multiply-add = 2 FLOPs

    def fwd_bwd():
        lin(x).sum().backward()

    _, total = count_flops(fwd_bwd)
    assert total == 3 * fwd  # backward: gradient of the input and of the weight

    conv = torch.nn.Conv2d(4, 6, kernel_size=3, padding=1)
    _, conv_flops = count_flops(conv, torch.randn(2, 4, 10, 10))
    assert conv_flops == 2 * (2 * 10 * 10) * 6 * (4 * 3 * 3)

    with torch.no_grad(), FlopCounter() as counter:  # works where FlopCounterMode does not
        lin.to("meta")(torch.zeros(1, 5, device="meta"))
    assert counter.total == 2 * 5 * 7


def test_cpu_attention_is_counted_like_on_meta():
    q, k, v = (torch.randn(2, 3, 16, 8, requires_grad=True) for _ in range(3))

    def attention(*tensors):
        return torch.nn.functional.scaled_dot_product_attention(*tensors)

    def fwd_bwd(*tensors):
        attention(*tensors).sum().backward()

    by_hand = 2 * 2 * (2 * 3 * 16 * 16 * 8)  # q @ k^T and attn @ v, 2 FLOPs per multiply-add
    assert count_flops(attention, q, k, v)[1] == by_hand
    assert (
        count_flops(fwd_bwd, q, k, v)[1] == 3.5 * by_hand
    )  # torch's backward formula: 5 matmuls + fwd
    meta = [t.detach().to("meta") for t in (q, k, v)]
    with torch.no_grad():
        assert count_flops(attention, *meta)[1] == by_hand


def test_model_flops_match_measured_tiny_counts_and_torch_counter():
    from torch.utils.flop_counter import FlopCounterMode

    big = model_flops(build_sam2_model("sam2.1_hiera_tiny", image_size=1024))
    assert big.encoder == pytest.approx(292e9, rel=0.005)  # sam2.1_hiera_tiny at 1024 px, measured
    assert big.decoder_per_prompt == pytest.approx(3.7e9, rel=0.03)
    assert 78 < big.prompts_per_encoder_pass < 82

    model = build_sam2_model("sam2.1_hiera_tiny", image_size=128)
    with torch.no_grad(), FlopCounter() as on_cpu:  # real arithmetic, CPU attention kernels
        encode(model, torch.randn(1, 3, 128, 128))
    for p in model.parameters():
        p.requires_grad_(False)  # FlopCounterMode's module tracker needs this under no_grad
    with torch.no_grad(), FlopCounterMode(display=False) as reference:
        encode(model.to("meta"), torch.zeros(1, 3, 128, 128, device="meta"))
    assert model_flops(model).encoder == reference.get_total_flops() == on_cpu.total


def test_gpu_peak_lookup():
    assert gpu_peak_bf16_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert gpu_peak_bf16_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu_peak_bf16_tflops("NVIDIA A100-SXM4-40GB") == 312.0
    assert gpu_peak_bf16_tflops("Some Future GPU") is None


def test_quick_benchmark_runs_and_is_consistent(tmp_path, capsys):
    out = tmp_path / "bench.json"
    sections = [s for s in SECTIONS if s != "clips"]  # tests/scripts/test_bench_clips.py
    argv = ["--quick", "--sections", *sections, "--device", "cpu", "--threads", "1"]
    result = bench.main([*argv, "--json", str(out)])
    printed = capsys.readouterr().out
    assert json.loads(out.read_text())["quick"] is True
    assert "| encoder |" in printed and "| model | config |" in printed

    enc = {r["precision"]: r for r in result["encoder"]}
    assert set(enc) == {"fp32", "bf16"}
    for r in enc.values():
        assert r["images_per_s"] > 0 and r["image_size"] == 128
        assert r["achieved_gflops"] == pytest.approx(r["gflop_per_image"] * r["images_per_s"])

    on_meta = model_flops(build_sam2_model("sam2.1_hiera_tiny", image_size=128)).encoder
    assert enc["fp32"]["gflop_per_image"] * 1e9 == on_meta  # counted on real CPU tensors

    train = {r["config"]: r for r in result["train"]}
    assert set(train) == set(TRAIN_CONFIGS)
    hit, recomputed = train["frozen_cache_hit"], train["frozen_recomputed"]
    lora, lora_ckpt, full = train["lora"], train["lora_checkpointing"], train["full"]
    lora_all = train["lora_checkpointing_all"]
    # the same prompts in every configuration: only the encoder's share differs
    assert len({r["objects_per_step"] for r in train.values()}) == 1
    # FLOPs: a hit skips the encoder; checkpointing recomputes its forward; full adds weight grads
    assert hit["flops_per_step"] < recomputed["flops_per_step"] < lora["flops_per_step"]
    assert lora["flops_per_step"] < lora_ckpt["flops_per_step"] < lora_all["flops_per_step"]
    assert lora["flops_per_step"] < full["flops_per_step"]
    assert recomputed["flop_speedup_vs_frozen"] == 1.0 and full["speedup_vs_full"] == 1.0
    batch, steps = result["settings"]["batch"], result["settings"]["steps"]
    assert hit["cache"] == {
        "hits": batch * (steps + 1),
        "misses": batch,
        "mb": pytest.approx(hit["cache"]["mb"]),
    }
    assert hit["fraction_of_flop_speedup"] == pytest.approx(
        hit["speedup_vs_frozen"] / hit["flop_speedup_vs_frozen"]
    )
    assert lora["trainable_params"] < full["trainable_params"]
    # samtune.training.memory's estimate next to every measured peak (the table prints both)
    assert "estimated MB" in printed
    assert all(r["estimated_memory_mb"] > 0 for r in train.values())
    assert (
        lora_all["estimated_memory_mb"] < lora["estimated_memory_mb"] < full["estimated_memory_mb"]
    )
    # timing: a hit looks features up instead of running the encoder (whole-step times are too
    # noisy on a shared 2-core machine to compare in a test; the benchmark reports them)
    assert hit["sec_encode"] < recomputed["sec_encode"]

    (ab,) = result["cache"]  # alternating hit / recomputed steps in one process
    assert ab["flops_hit"] == hit["flops_per_step"]
    assert ab["flops_recomputed"] == recomputed["flops_per_step"]
    assert ab["speedup"] == pytest.approx(ab["sec_recomputed"] / ab["sec_hit"])
    assert ab["flop_speedup"] == pytest.approx(hit["flop_speedup_vs_frozen"])

    ev = result["eval"]
    if "error" not in ev:  # the evaluator is part of the checkout
        assert ev["evaluated_objects"] == ev["objects"] > 0
        assert ev["samtune_objects_per_s"] > 0 and ev["official_objects_per_s"] > 0
        assert ev["samtune_all_objects_per_decode_objects_per_s"] > 0
        # the evaluator's "auto" settings, resolved for the CPU

        assert ev["samtune_image_batch"] == 1
        assert ev["samtune_objects_per_decode"] == cpu_decode_chunk(ev["image_size"])
    pr = result["predictor"]
    if "error" not in pr:
        assert pr["official_s"] > 0 and pr["samtune_s"] > 0


def test_every_option_the_sections_read_has_a_default():
    """The full (non --quick) run reads only options that parse_args defines."""
    import re

    source = "\n".join(p.read_text() for p in (REPO / "scripts" / "bench").glob("*.py"))
    used = set(re.findall(r"\bargs\.([a-z_]+)\b", source))
    assert used <= set(vars(bench.parse_args([]))), used - set(vars(bench.parse_args([])))


def test_without_data_the_benchmark_draws_samtunes_synthetic_ellipses():
    """``--data none``: the ``synthetic`` data config, sized like nuclei-mini's crowded images."""
    cfg = compose_config("eval", data_overrides(None, 2))
    datamodule, samples = load_samples(cfg, 2)
    assert type(datamodule).__name__ == "SyntheticDataModule" and len(samples) == 2
    for sample in samples:
        assert sample.image.shape == (*SYNTHETIC["size"], 3)
        assert sample.masks.shape[0] == SYNTHETIC["objects"][0]  # 12 ellipses, none overlapping
        height = sample.masks.any(2).sum(1)  # rows each ellipse spans: data.radius reached it
        assert height.max() <= 2 * SYNTHETIC["radius"][1] * SYNTHETIC["size"][0] + 1
    assert not (samples[0].masks.sum(0) > 1).any()
    assert bench.parse_args(["--data", "none"]).data is None


@pytest.mark.slow
def test_isolated_configuration_runs_in_its_own_process(tmp_path):
    """``--isolate``: the configuration is measured by ``python -m scripts.bench --train-job`` in
    a child process, whose peak memory is its own."""
    argv = ["--quick", "--isolate", "--sections", "train", "--train-configs", "lora"]
    result = bench.main([*argv, "--device", "cpu", "--threads", "1", "--json", str(tmp_path / "b")])
    (row,) = result["train"]
    assert row["config"] == "lora" and row["memory_kind"] == "peak RSS - RSS before building"
    assert row["peak_memory_mb"] > 0 and row["flops_per_step"] > 0
