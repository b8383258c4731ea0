"""``device: auto`` and ``data.num_workers: auto``."""

from __future__ import annotations

import pytest
import torch

from samtune.devices import auto_num_workers, resolve_device, resolve_num_workers
from samtune.validation import ConfigValueError


def test_auto_device_is_cuda_only_when_pytorch_sees_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    assert resolve_device(None) == "cpu"
    assert resolve_device("CPU") == "cpu"
    with pytest.raises(ConfigValueError, match="device=cuda, but PyTorch sees no CUDA device"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(ConfigValueError, match=r"sees 2 CUDA device\(s\) \(cuda:0 to cuda:1\)"):
        resolve_device("cuda:2")
    with pytest.raises(ConfigValueError, match="serve.device must be auto, cpu, cuda"):
        resolve_device("gpu0", key="serve.device")


def test_auto_workers_share_the_cpus_between_local_processes(monkeypatch):
    import samtune.devices as devices

    monkeypatch.delenv("SAMTUNE_NUM_WORKERS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("SLURM_NTASKS_PER_NODE", raising=False)
    monkeypatch.setattr(devices, "usable_cpus", lambda: 16)
    assert auto_num_workers() == 8  # 15, capped
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert auto_num_workers() == 3
    monkeypatch.setattr(devices, "usable_cpus", lambda: 2)
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert resolve_num_workers("auto") == 1
    monkeypatch.setattr(devices, "usable_cpus", lambda: 1)
    assert resolve_num_workers("auto") == 0
    monkeypatch.setenv("SAMTUNE_NUM_WORKERS", "5")
    assert resolve_num_workers("auto") == 5
    assert resolve_num_workers(2) == 2  # a number is taken as it is
    with pytest.raises(ConfigValueError, match=r"data.num_workers must be 'auto' or an integer"):
        resolve_num_workers(-1)
    monkeypatch.setenv("SAMTUNE_NUM_WORKERS", "many")
    with pytest.raises(ConfigValueError, match=r"\$SAMTUNE_NUM_WORKERS must be an integer"):
        resolve_num_workers("auto")


def test_a_datamodule_reads_auto_workers(monkeypatch, tmp_path):
    from samtune.data.datamodules.synthetic import SyntheticDataModule

    monkeypatch.setenv("SAMTUNE_NUM_WORKERS", "1")
    dm = SyntheticDataModule(image_size=64, num_workers="auto")
    assert dm.num_workers == 1
    with pytest.raises(ConfigValueError, match="data.num_workers"):
        SyntheticDataModule(image_size=64, num_workers="lots")
