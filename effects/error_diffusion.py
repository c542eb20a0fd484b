"""The sequential Floyd–Steinberg loop, compiled by numba.

Kept apart so that importing the registry (as the API does) does not import
numba; the kernel is compiled on first use and cached on disk.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit


@njit(cache=True, nogil=True)  # type: ignore[untyped-decorator]
def _diffuse(grey: np.ndarray, threshold: np.ndarray, opaque: np.ndarray) -> np.ndarray:
    height, width = grey.shape
    work = grey.astype(np.float32)
    black = np.zeros((height, width), dtype=np.bool_)
    for y in range(height):
        for x in range(width):
            if not opaque[y, x]:
                continue
            value = work[y, x]
            if value < threshold[y, x]:
                black[y, x] = True
                error = value
            else:
                error = value - 255.0
            if x + 1 < width:
                work[y, x + 1] += error * (7.0 / 16.0)
            if y + 1 < height:
                if x > 0:
                    work[y + 1, x - 1] += error * (3.0 / 16.0)
                work[y + 1, x] += error * (5.0 / 16.0)
                if x + 1 < width:
                    work[y + 1, x + 1] += error * (1.0 / 16.0)
    return black


def diffuse_on_grid(
    grey: npt.NDArray[np.float32],
    threshold: npt.NDArray[np.float32],
    opaque: npt.NDArray[np.bool_],
) -> npt.NDArray[np.bool_]:
    """Which grid points turn black, visiting them in scan-line order."""
    result: npt.NDArray[np.bool_] = _diffuse(grey, threshold, opaque)
    return result
