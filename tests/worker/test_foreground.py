"""The torch foreground estimation (for CUDA workers) against pymatting's, on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.helpers import SAMPLE
from worker.foreground import TorchForeground

#: In 0..1: what a viewer sees (weighted by alpha) within a quarter of an 8-bit step, any
#: visible pixel within two steps on average.
MAX_ALPHA_WEIGHTED_DIFFERENCE = 1 / 255
MAX_VISIBLE_MEAN_DIFFERENCE = 2 / 255


def soft_oval(height: int, width: int, hardness: float) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    distance = ((yy - height / 2) / (height * 0.4)) ** 2 + ((xx - width / 2) / (width * 0.35)) ** 2
    return np.clip((1 - distance) * hardness, 0, 1)


def pymatting_foreground(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """pymatting's own estimate. Imported here, not at the top: `import pymatting` compiles
    all of its numba kernels (about 45 CPU-seconds on a fresh install), and every test
    process imports every test module to collect it."""
    from pymatting import estimate_foreground_ml

    return estimate_foreground_ml(image, alpha)


@pytest.mark.parametrize("hardness", [1.5, 3.0, 20.0])
def test_the_torch_estimate_matches_pymatting_where_it_shows(hardness):
    image = np.asarray(Image.open(SAMPLE).convert("RGB"), dtype=np.float64) / 255
    height, width = image.shape[:2]
    alpha = soft_oval(height, width, hardness)
    expected = pymatting_foreground(image, alpha)
    found = TorchForeground("cpu")(image, alpha)
    assert found.shape == expected.shape
    assert found.dtype == np.float32
    difference = np.abs(found - expected)
    weighted = (difference * alpha[..., None]).sum() / (alpha.sum() * 3)
    assert weighted <= MAX_ALPHA_WEIGHTED_DIFFERENCE
    assert difference[alpha > 0.05].mean() <= MAX_VISIBLE_MEAN_DIFFERENCE
    assert found.min() >= 0
    assert found.max() <= 1


def test_a_uniform_photo_keeps_its_colour():
    image = np.full((40, 50, 3), (0.2, 0.5, 0.8))
    alpha = soft_oval(40, 50, 3.0)
    found = TorchForeground("cpu")(image, alpha)
    visible = alpha > 0.05
    assert np.allclose(found[visible], (0.2, 0.5, 0.8), atol=1e-3)


@pytest.mark.parametrize("shape", [(3, 5, 7), (3, 1, 1), (3, 1, 6), (3, 4, 1)])
def test_neighbours_are_one_step_along_the_axis_the_border_its_own(shape):
    import torch

    from worker.foreground import NEIGHBOURS, _add_weighted_neighbours, _shifted

    generator = torch.Generator().manual_seed(0)
    pixels = torch.rand(shape, generator=generator)
    weight = torch.rand((1, *shape[1:]), generator=generator)
    for axis, step in NEIGHBOURS:
        size = shape[axis]
        neighbours = pixels.index_select(axis, (torch.arange(size) + step).clamp(0, size - 1))
        assert torch.equal(_shifted(pixels, axis, step), neighbours), (axis, step)
        total = torch.rand(shape, generator=generator)
        expected = total + weight * neighbours
        _add_weighted_neighbours(total, weight, pixels, axis, step)
        assert torch.allclose(total, expected, rtol=0, atol=1e-6), (axis, step)


def test_the_pyramid_resize_takes_pymattings_nearest_pixels():
    import torch

    from worker.foreground import _nearest

    pixels = torch.arange(2 * 5 * 7, dtype=torch.float32).view(2, 5, 7)
    resized = _nearest(pixels, 8, 3)
    rows = [y * 5 // 8 for y in range(8)]
    columns = [x * 7 // 3 for x in range(3)]
    assert resized.tolist() == pixels[:, rows][:, :, columns].tolist()
    assert _nearest(pixels, 5, 7) is pixels
