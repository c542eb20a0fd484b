"""popart's per-pixel arithmetic, vectorised in float64 in the source's order.

Every pixel's contrast, saturation (truncated to 8 bits, as the source stored it) and
posterisation level are computed as the source did, operation for operation in float64,
so each posterised triple is exactly the source's; the colour choice is then a table
lookup. numpy runs it a band of rows at a time, so the float64 temporaries stay small;
no compiler is needed, so no worker start waits for one.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

#: Rows per band: a few MB of float64 temporaries at 2048 px wide.
BAND_ROWS = 128
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def contrast_table(contrast: float) -> npt.NDArray[np.float64]:
    """Step 1 for every 8-bit value, in float64."""
    levels = np.arange(256, dtype=np.float64)
    table: npt.NDArray[np.float64] = np.clip((levels - 128) * contrast + 128, 0, 255)
    return table


def _band_indices(
    band: npt.NDArray[np.uint8], table: npt.NDArray[np.float64], saturation: float, levels: int
) -> npt.NDArray[np.uint16]:
    red, green, blue = (table[band[..., channel]] for channel in range(3))
    luma = LUMA_WEIGHTS[0] * red + LUMA_WEIGHTS[1] * green + LUMA_WEIGHTS[2] * blue
    step = 255.0 / (levels - 1)
    index = np.zeros(band.shape[:2], dtype=np.uint16)
    for boosted in (red, green, blue):
        value = np.clip(luma + (boosted - luma) * saturation, 0.0, 255.0)
        # Truncated to 8 bits first; a tie cannot happen (see posterised levels).
        level = np.rint(np.trunc(value) / step).astype(np.uint16)
        index = index * np.uint16(levels) + level
    return index


def poster_indices(
    rgba: npt.NDArray[np.uint8], contrast: float, saturation: float, levels: int
) -> npt.NDArray[np.uint16]:
    """Steps 1 to 3: each pixel's posterised (R, G, B) as one index, R most significant."""
    table = contrast_table(contrast)
    out = np.empty(rgba.shape[:2], dtype=np.uint16)
    for top in range(0, rgba.shape[0], BAND_ROWS):
        band = rgba[top : top + BAND_ROWS]
        out[top : top + BAND_ROWS] = _band_indices(band, table, float(saturation), int(levels))
    return out
