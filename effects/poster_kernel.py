"""popart's per-pixel arithmetic, compiled by numba, in float64 and the source's order.

Kept apart so that importing the registry does not import numba. Every pixel's
contrast, saturation (truncated to 8 bits, as the source stored it) and
posterisation level are computed as the source did, so each posterised triple
is exactly the source's; the colour choice is then a table lookup.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit


@njit(cache=True, nogil=True)  # type: ignore[untyped-decorator]
def _poster_indices(
    rgba: np.ndarray, contrast_lut: np.ndarray, saturation: float, levels: int
) -> np.ndarray:
    height, width = rgba.shape[0], rgba.shape[1]
    out = np.empty((height, width), dtype=np.uint16)
    step = 255.0 / (levels - 1)
    for y in range(height):
        for x in range(width):
            red = contrast_lut[rgba[y, x, 0]]
            green = contrast_lut[rgba[y, x, 1]]
            blue = contrast_lut[rgba[y, x, 2]]
            luma = 0.299 * red + 0.587 * green + 0.114 * blue
            index = 0
            for boosted in (red, green, blue):
                value = luma + (boosted - luma) * saturation
                value = min(max(value, 0.0), 255.0)
                # Truncated to 8 bits first; a tie cannot happen (see posterised levels).
                level = int(np.rint(float(int(value)) / step))
                index = index * levels + level
            out[y, x] = index
    return out


def contrast_table(contrast: float) -> npt.NDArray[np.float64]:
    """Step 1 for every 8-bit value, in float64."""
    levels = np.arange(256, dtype=np.float64)
    table: npt.NDArray[np.float64] = np.clip((levels - 128) * contrast + 128, 0, 255)
    return table


def poster_indices(
    rgba: npt.NDArray[np.uint8], contrast: float, saturation: float, levels: int
) -> npt.NDArray[np.uint16]:
    """Steps 1 to 3: each pixel's posterised (R, G, B) as one index, R most significant."""
    indices: npt.NDArray[np.uint16] = _poster_indices(
        np.ascontiguousarray(rgba), contrast_table(contrast), float(saturation), int(levels)
    )
    return indices
