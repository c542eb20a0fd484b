"""The vectorised Floyd–Steinberg decides every grid point as the scan-line loop of
effects.md does, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from effects.error_diffusion import diffuse_on_grid

SHARES = ((0, 1, 7 / 16), (1, -1, 3 / 16), (1, 0, 5 / 16), (1, 1, 1 / 16))


def scan_line_loop(grey: np.ndarray, threshold: np.ndarray, opaque: np.ndarray) -> np.ndarray:
    """effects.md step 5 as written: float32 values, each error added in float64."""
    height, width = grey.shape
    work = grey.astype(np.float32)
    black = np.zeros((height, width), dtype=bool)
    for y in range(height):
        for x in range(width):
            if not opaque[y, x]:
                continue
            value = float(work[y, x])
            black[y, x] = work[y, x] < threshold[y, x]
            error = value if black[y, x] else value - 255.0
            for dy, dx, share in SHARES:
                if y + dy < height and 0 <= x + dx < width:
                    work[y + dy, x + dx] = np.float32(float(work[y + dy, x + dx]) + error * share)
    return black


@pytest.mark.parametrize(
    ("height", "width"), [(1, 1), (1, 9), (9, 1), (2, 2), (3, 7), (17, 5), (40, 61)]
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_wavefronts_decide_as_the_scan_line_loop(height, width, seed):
    rng = np.random.default_rng(seed)
    grey = (rng.random((height, width)) * 255).astype(np.float32)
    threshold = (80 + rng.random((height, width)) * 100).astype(np.float32)
    opaque = rng.random((height, width)) > 0.25
    found = diffuse_on_grid(grey, threshold, opaque)
    assert found.shape == (height, width)
    assert np.array_equal(found, scan_line_loop(grey, threshold, opaque))


def test_transparent_points_stay_white_and_send_no_error():
    grey = np.full((4, 6), 100.0, dtype=np.float32)
    threshold = np.full((4, 6), 128.0, dtype=np.float32)
    opaque = np.ones((4, 6), dtype=bool)
    opaque[:, 0] = False
    found = diffuse_on_grid(grey, threshold, opaque)
    assert not found[:, 0].any()
    assert np.array_equal(found, scan_line_loop(grey, threshold, opaque))
