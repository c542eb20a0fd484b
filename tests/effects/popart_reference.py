"""popart as the source painted it: its loops, written from ../docs effects.md, slow on purpose.

Float64 arithmetic in the source's order; a Python loop over the pixels for the colour
choice. Used only to check effects/popart.py pixel for pixel.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from effects import popart as fast

BANDS = (
    (70, fast.BLUE_VIOLET),
    (100, fast.DEEP_SKY_BLUE),
    (130, fast.HOT_PINK),
    (160, fast.LIME_GREEN),
    (190, fast.SPRING_GREEN),
    (210, fast.LIME_GREEN),
    (240, fast.HOT_PINK),
)
FAMILIES = (
    (fast.HOT_PINK, fast.RED_ORANGE),
    (fast.SPRING_GREEN, fast.LIME_GREEN),
    (fast.BLUE_VIOLET, fast.DEEP_SKY_BLUE),
)


def colour_of(r: float, g: float, b: float) -> tuple[int, int, int]:
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    if luminance < 40:
        return fast.BLACK
    colour = fast.DEEP_SKY_BLUE
    for top, band_colour in BANDS:
        if luminance <= top:
            colour = band_colour
            break
    if max(r, g, b) - min(r, g, b) > 60:
        index = int((r + g + b) % 2)
        if r - g > 30 and r - b > 30:
            colour = FAMILIES[0][index]
        elif g - r > 30 and g - b > 30:
            colour = FAMILIES[1][index]
        elif b - r > 30 and b - g > 30:
            colour = FAMILIES[2][index]
    return colour


def reference_popart(
    rgba: npt.NDArray[np.uint8], contrast: float = 2.5, saturation: float = 2.0, levels: int = 3
) -> npt.NDArray[np.uint8]:
    rgb = rgba[..., :3].astype(np.float64)
    boosted = np.clip((rgb - 128) * contrast + 128, 0, 255)
    luma = 0.299 * boosted[..., 0] + 0.587 * boosted[..., 1] + 0.114 * boosted[..., 2]
    saturated = np.clip(luma[..., None] + (boosted - luma[..., None]) * saturation, 0, 255)
    stored = saturated.astype(np.uint8)  # the source kept 8-bit pixels
    step = 255 / (levels - 1)
    poster = np.round(stored / step) * step
    out = np.zeros_like(rgba)
    for y in range(rgba.shape[0]):
        for x in range(rgba.shape[1]):
            out[y, x, :3] = colour_of(*(float(v) for v in poster[y, x]))
    out[..., 3] = rgba[..., 3]
    return out
