"""CUTFX_PRECISION on the CPU: bf16 autocast where the CPU has bf16 instructions, fp32 else.

The same generated checkpoint and photos through fp32 and bf16: the masks agree within
a mean of 2/255, and, since random-weight masks saturate, so do the network's raw
outputs before the sigmoid.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from shared.settings import Settings
from tests.helpers import SAMPLE
from worker.engine_choice import cpu_supports_bf16, effective_precision
from worker.model import load_model

MAX_MEAN_MASK_DIFFERENCE = 2.0
MIN_LOGIT_CORRELATION = 0.99


@pytest.mark.parametrize(
    ("device", "setting", "bf16_on_cpu", "expected"),
    [
        ("cpu", "fp16", True, "bf16"),
        ("cpu", "bf16", True, "bf16"),
        ("cpu", "fp32", True, "fp32"),
        ("cpu", "fp16", False, "fp32"),
        ("cpu", "bf16", False, "fp32"),
        ("cuda:0", "fp16", False, "fp16"),
        ("cuda:0", "bf16", False, "bf16"),
    ],
)
def test_the_precision_each_device_runs(device, setting, bf16_on_cpu, expected):
    assert effective_precision(device, setting, bf16_on_cpu) == expected


def test_bf16_is_detected_from_the_cpus_flags(tmp_path):
    with_amx = tmp_path / "amx"
    with_amx.write_text("flags\t\t: fpu sse2 avx2 avx512f amx_bf16 amx_tile\n")
    without = tmp_path / "plain"
    without.write_text("flags\t\t: fpu sse2 avx2\n")
    assert cpu_supports_bf16(with_amx) is torch.backends.mkldnn.is_available()
    assert cpu_supports_bf16(without) is False
    assert cpu_supports_bf16(tmp_path / "missing") is False


def photos() -> list[np.ndarray]:
    sample = np.asarray(Image.open(SAMPLE).convert("RGB"))
    return [sample, np.ascontiguousarray(sample[40:260, 100:400])]


def raw_saliency(loaded, rgb: np.ndarray) -> torch.Tensor:
    """The network's last saliency map before the sigmoid, at the loaded precision."""
    (logits,) = loaded.saliency([loaded.prepare(rgb)])
    return logits


def test_bf16_on_the_cpu_gives_the_fp32_masks(checkpoint):
    if not cpu_supports_bf16():
        pytest.skip("this CPU has no bf16 instructions: the worker runs fp32 here")
    settings = Settings(model_mode="fast", model_ckpt=str(checkpoint), device="cpu")
    exact = load_model(settings.with_overrides(engine="torch-fp32"))
    fast = load_model(settings.with_overrides(engine="torch-bf16"))
    assert (exact.precision, fast.precision) == ("fp32", "bf16")
    for rgb in photos():
        # One forward each: `segment` is `finish` over these same logits.
        logits, fast_logits = raw_saliency(exact, rgb), raw_saliency(fast, rgb)
        exact_mask = exact.finish(rgb, logits)[..., 3].astype(np.float64)
        fast_mask = fast.finish(rgb, fast_logits)[..., 3].astype(np.float64)
        assert np.abs(exact_mask - fast_mask).mean() <= MAX_MEAN_MASK_DIFFERENCE
        correlation = torch.corrcoef(torch.stack([logits.flatten(), fast_logits.flatten()]))
        assert correlation[0, 1].item() >= MIN_LOGIT_CORRELATION
        assert not torch.equal(logits, fast_logits), "bf16 really ran"
