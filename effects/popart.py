"""popart: flat, loud, eight-colour poster (effects.md)."""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
import numpy.typing as npt

from effects.base import RGBA
from effects.params import Params, integer, number

BLACK = (0, 0, 0)
BLUE_VIOLET = (138, 43, 226)
DEEP_SKY_BLUE = (0, 191, 255)
HOT_PINK = (255, 20, 147)
LIME_GREEN = (50, 205, 50)
SPRING_GREEN = (0, 255, 127)
RED_ORANGE = (255, 69, 0)
ORANGE = (255, 165, 0)
YELLOW = (255, 255, 0)

#: Every colour popart may paint; orange and yellow are in the source's palette but unused.
PALETTE = (BLACK, BLUE_VIOLET, DEEP_SKY_BLUE, HOT_PINK, LIME_GREEN, SPRING_GREEN, RED_ORANGE)

#: Upper bounds (inclusive) of the BT.709 luminance bands, and each band's colour.
LUMINANCE_BAND_TOPS = np.array([40, 70, 100, 130, 160, 190, 210, 240], dtype=np.float32)
LUMINANCE_BAND_COLOURS = np.array(
    [
        BLACK,
        BLUE_VIOLET,
        DEEP_SKY_BLUE,
        HOT_PINK,
        LIME_GREEN,
        SPRING_GREEN,
        LIME_GREEN,
        HOT_PINK,
        DEEP_SKY_BLUE,
    ],
    dtype=np.uint8,
)

#: For a pixel led by red, green or blue: the colour for an even and an odd R+G+B.
HUE_FAMILY_COLOURS = np.array(
    [
        [HOT_PINK, RED_ORANGE],
        [SPRING_GREEN, LIME_GREEN],
        [DEEP_SKY_BLUE, BLUE_VIOLET],
    ],
    dtype=np.uint8,
)
STRONG_CHROMA = 60
CHANNEL_LEAD = 30

BT601 = np.array([0.299, 0.587, 0.114], dtype=np.float32)
BT709 = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)


def boost(rgba: RGBA, contrast: float, saturation: float) -> list[npt.NDArray[np.float32]]:
    """Steps 1 and 2: per-channel contrast, then saturation around the BT.601 luma.

    Not clipped to 0..255 yet: posterised_index saturates, which is the same clip.
    """
    levels = np.arange(256, dtype=np.float32)
    contrast_lut = np.clip((levels - 128) * np.float32(contrast) + 128, 0, 255).astype(np.float32)
    red, green, blue = (cv2.LUT(plane, contrast_lut) for plane in cv2.split(rgba)[:3])
    luma = cv2.addWeighted(red, float(BT601[0]), green, float(BT601[1]), 0)
    luma = cv2.scaleAdd(blue, float(BT601[2]), luma)
    # L + (c − L)·k is k·c + (1 − k)·L: one fused pass per channel.
    return [
        np.asarray(cv2.addWeighted(plane, saturation, luma, 1 - saturation, 0), dtype=np.float32)
        for plane in (red, green, blue)
    ]


def posterise(channels: npt.NDArray[np.float32], levels: int) -> npt.NDArray[np.int16]:
    step = np.float32(255.0 / (levels - 1))
    # The source kept 8-bit pixels, so 127.5 became 127: that value decides parity below.
    return (np.rint(channels / step) * step).astype(np.uint8).astype(np.int16)


def luminance_colours(poster: npt.NDArray[np.int16]) -> npt.NDArray[np.uint8]:
    """Step 4: map BT.709 luminance bands to colours (upper bounds inclusive)."""
    luminance = np.dot(poster.astype(np.float32), BT709)
    band = np.searchsorted(LUMINANCE_BAND_TOPS, luminance, side="left")
    colours: npt.NDArray[np.uint8] = LUMINANCE_BAND_COLOURS[band]
    return colours


def hue_family_overrides(
    poster: npt.NDArray[np.int16], colours: npt.NDArray[np.uint8]
) -> npt.NDArray[np.uint8]:
    """Step 5: strongly coloured pixels keep their hue family, alternating by parity."""
    red, green, blue = poster[..., 0], poster[..., 1], poster[..., 2]
    chroma = poster.max(axis=-1) - poster.min(axis=-1)
    strong = chroma > STRONG_CHROMA
    leaders = (
        (red - green > CHANNEL_LEAD) & (red - blue > CHANNEL_LEAD),
        (green - red > CHANNEL_LEAD) & (green - blue > CHANNEL_LEAD),
        (blue - red > CHANNEL_LEAD) & (blue - green > CHANNEL_LEAD),
    )
    parity = (red + green + blue) & 1
    for channel, leads in enumerate(leaders):
        hit = strong & leads
        colours[hit] = HUE_FAMILY_COLOURS[channel][parity[hit]]
    return colours


@lru_cache(maxsize=8)
def poster_colour_table(levels: int) -> npt.NDArray[np.uint8]:
    """Steps 3 to 5 depend only on the posterised triple: a table of levels³ colours."""
    indices = np.arange(levels**3)
    triples = np.stack(
        [indices // levels**2, indices // levels % levels, indices % levels], axis=-1
    )
    poster = posterise(triples.astype(np.float32) * np.float32(255.0 / (levels - 1)), levels)
    return hue_family_overrides(poster, luminance_colours(poster))


@lru_cache(maxsize=8)
def packed_colour_table(levels: int) -> npt.NDArray[np.uint32]:
    """The colour table as little-endian RGBA words with alpha 0, to OR the alpha into."""
    table = poster_colour_table(levels)
    rgba = np.zeros((len(table), 4), dtype=np.uint8)
    rgba[:, :3] = table
    packed: npt.NDArray[np.uint32] = rgba.view("<u4").ravel()
    return packed


def posterised_index(boosted: list[npt.NDArray[np.float32]], levels: int) -> npt.NDArray[np.uint16]:
    """Step 3, as the index of each pixel's posterised (R, G, B) triple."""
    scale = (levels - 1) / 255.0
    # Clip at 0, then scale, round and saturate to 8 bits in one OpenCV pass each.
    red, green, blue = (
        cv2.convertScaleAbs(np.maximum(plane, 0), alpha=scale).astype(np.uint16)
        for plane in boosted
    )
    top = np.uint16(levels - 1)
    red, green, blue = (np.minimum(channel, top) for channel in (red, green, blue))
    index: npt.NDArray[np.uint16] = (red * np.uint16(levels) + green) * np.uint16(levels) + blue
    return index


def popart(rgba: RGBA, params: Params) -> RGBA:
    levels = integer(params, "levels")
    boosted = boost(rgba, number(params, "contrast"), number(params, "saturation"))
    words = np.take(packed_colour_table(levels), posterised_index(boosted, levels))
    words |= rgba[..., 3].astype("<u4") << 24
    out: RGBA = words.view(np.uint8).reshape(rgba.shape)
    return out
