"""Model loading details that do not need a worker: mmap, device choice, precision."""

from __future__ import annotations

import pytest
import torch

from worker.model import mmap_checkpoint_loads, resolve_device


def test_checkpoint_loads_are_memory_mapped_then_restored(tmp_path, monkeypatch):
    path = tmp_path / "weights.pth"
    torch.save({"w": torch.ones(4)}, path)
    real_load = torch.load
    calls: list[dict[str, object]] = []

    def recording_load(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    with mmap_checkpoint_loads():
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    assert calls == [{"map_location": "cpu", "weights_only": True, "mmap": True}]
    assert torch.load is recording_load, "restored afterwards"
    assert loaded["w"].sum().item() == 4


def test_auto_picks_the_cpu_here_and_cuda_is_refused_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(RuntimeError, match="no CUDA device"):
        resolve_device("cuda")
