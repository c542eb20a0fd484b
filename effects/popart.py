"""popart: flat, loud, eight-colour poster (effects.md), and its Warhol grid.

Steps 1 to 3 (contrast, saturation, posterisation) run per pixel in
effects/poster_kernel.py; steps 4 and 5 depend only on the posterised triple,
so they are a table of levels³ colours built once.

The Warhol layout (`layout=warhol`) paints the same poster four times in a 2×2
grid, each tile the whole subject at half the size, in four palettes: the
classic one (top left), then "sunset", "ocean" and "citrus", which swap each
palette colour for another of the poster palette (orange and yellow, unused by
the classic poster, among them); black stays black. The grid has the input's
size, and its alpha is the cutout's alpha scaled into each tile.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
import numpy.typing as npt

from effects.params import Params, choice, integer, number
from effects.poster_kernel import poster_indices
from effects.registry import RGBA

Colour = tuple[int, int, int]

BLACK = (0, 0, 0)
BLUE_VIOLET = (138, 43, 226)
DEEP_SKY_BLUE = (0, 191, 255)
HOT_PINK = (255, 20, 147)
LIME_GREEN = (50, 205, 50)
SPRING_GREEN = (0, 255, 127)
RED_ORANGE = (255, 69, 0)
ORANGE = (255, 165, 0)
YELLOW = (255, 255, 0)

#: The colours of the poster; the source's palette also held orange and yellow, unused.
POSTER_PALETTE = (
    BLACK,
    BLUE_VIOLET,
    DEEP_SKY_BLUE,
    HOT_PINK,
    LIME_GREEN,
    SPRING_GREEN,
    RED_ORANGE,
)
#: Every colour popart may paint: the Warhol palettes use orange and yellow too.
PALETTE = (*POSTER_PALETTE, ORANGE, YELLOW)

#: Below this BT.709 luminance a pixel is black, and stays black.
BLACK_BELOW = 40.0
#: Upper bounds (inclusive) of the luminance bands from 40 on, and each band's colour;
#: above the last, deep sky blue.
LUMINANCE_BAND_TOPS = np.array([70, 100, 130, 160, 190, 210, 240], dtype=np.float64)
LUMINANCE_BAND_COLOURS = np.array(
    [
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

#: For a pixel led by red, green or blue: its colour at hue-family index 0 and 1.
HUE_FAMILY_COLOURS = np.array(
    [
        [HOT_PINK, RED_ORANGE],
        [SPRING_GREEN, LIME_GREEN],
        [BLUE_VIOLET, DEEP_SKY_BLUE],
    ],
    dtype=np.uint8,
)
STRONG_CHROMA = 60
CHANNEL_LEAD = 30

BT709 = np.array([0.2126, 0.7152, 0.0722], dtype=np.float64)

#: The Warhol tiles' palettes (top left, top right, bottom left, bottom right), as swaps
#: of poster colours.
WARHOL_PALETTES: tuple[dict[Colour, Colour], ...] = (
    {},
    {  # sunset
        BLUE_VIOLET: RED_ORANGE,
        DEEP_SKY_BLUE: YELLOW,
        HOT_PINK: ORANGE,
        LIME_GREEN: HOT_PINK,
        SPRING_GREEN: YELLOW,
        RED_ORANGE: BLUE_VIOLET,
    },
    {  # ocean
        BLUE_VIOLET: DEEP_SKY_BLUE,
        DEEP_SKY_BLUE: SPRING_GREEN,
        HOT_PINK: BLUE_VIOLET,
        LIME_GREEN: DEEP_SKY_BLUE,
        SPRING_GREEN: LIME_GREEN,
        RED_ORANGE: HOT_PINK,
    },
    {  # citrus
        BLUE_VIOLET: LIME_GREEN,
        DEEP_SKY_BLUE: ORANGE,
        HOT_PINK: YELLOW,
        LIME_GREEN: RED_ORANGE,
        SPRING_GREEN: ORANGE,
        RED_ORANGE: SPRING_GREEN,
    },
)


def posterised_levels(levels: int) -> npt.NDArray[np.float64]:
    """Every posterised (R, G, B) triple, in index order, as the source's floats (the
    middle of three levels is 127.5, not 127)."""
    step = 255.0 / (levels - 1)
    indices = np.arange(levels**3)
    triples = np.stack([indices // levels**2, indices // levels % levels, indices % levels], -1)
    poster: npt.NDArray[np.float64] = triples.astype(np.float64) * step
    return poster


def luminance_colours(poster: npt.NDArray[np.float64]) -> npt.NDArray[np.uint8]:
    """Step 4: black below 40, then bands with inclusive upper bounds (40 is blue violet)."""
    luminance = poster @ BT709
    colours: npt.NDArray[np.uint8] = LUMINANCE_BAND_COLOURS[
        np.searchsorted(LUMINANCE_BAND_TOPS, luminance, side="left")
    ]
    colours[luminance < BLACK_BELOW] = BLACK
    return colours


def hue_family_overrides(
    poster: npt.NDArray[np.float64], colours: npt.NDArray[np.uint8]
) -> npt.NDArray[np.uint8]:
    """Step 5: strongly coloured, not black pixels keep their hue family, picked by
    int((R + G + B) mod 2) of the posterised floats; red is tested first, then green."""
    red, green, blue = poster[..., 0], poster[..., 1], poster[..., 2]
    eligible = (poster.max(axis=-1) - poster.min(axis=-1) > STRONG_CHROMA) & (
        poster @ BT709 >= BLACK_BELOW
    )
    family_index = np.mod(red + green + blue, 2).astype(np.int64)
    leaders = (
        (red - green > CHANNEL_LEAD) & (red - blue > CHANNEL_LEAD),
        (green - red > CHANNEL_LEAD) & (green - blue > CHANNEL_LEAD),
        (blue - red > CHANNEL_LEAD) & (blue - green > CHANNEL_LEAD),
    )
    for channel, leads in enumerate(leaders):
        hit = eligible & leads
        eligible &= ~leads
        colours[hit] = HUE_FAMILY_COLOURS[channel][family_index[hit]]
    return colours


@lru_cache(maxsize=8)
def poster_colour_table(levels: int) -> npt.NDArray[np.uint8]:
    """Steps 4 and 5 for every posterised triple: a table of levels³ colours."""
    poster = posterised_levels(levels)
    return hue_family_overrides(poster, luminance_colours(poster))


@lru_cache(maxsize=32)
def packed_colour_table(levels: int, palette: int = 0) -> npt.NDArray[np.uint32]:
    """The colour table in one of the Warhol palettes, as little-endian RGBA words with
    alpha 0, to OR the alpha into."""
    base = poster_colour_table(levels)
    table = base.copy()
    for before, after in WARHOL_PALETTES[palette].items():
        table[np.all(base == before, axis=-1)] = after
    rgba = np.zeros((len(table), 4), dtype=np.uint8)
    rgba[:, :3] = table
    packed: npt.NDArray[np.uint32] = rgba.view("<u4").ravel()
    return packed


def paint(
    indices: npt.NDArray[np.uint16], alpha: npt.NDArray[np.uint8], levels: int, palette: int = 0
) -> RGBA:
    words = np.take(packed_colour_table(levels, palette), indices)
    words |= alpha.astype("<u4") << 24
    out: RGBA = words.view(np.uint8).reshape((*indices.shape, 4))
    return out


def warhol_grid(indices: npt.NDArray[np.uint16], alpha: npt.NDArray[np.uint8], levels: int) -> RGBA:
    """The 2×2 grid: each tile the whole poster scaled into it, in its own palette."""
    height, width = indices.shape
    grid = np.zeros((height, width, 4), dtype=np.uint8)
    tops, lefts = (0, height // 2), (0, width // 2)
    for tile in range(4):
        top, left = tops[tile // 2], lefts[tile % 2]
        bottom = height // 2 if tile // 2 == 0 else height
        right = width // 2 if tile % 2 == 0 else width
        size = (right - left, bottom - top)
        poster = paint(indices, alpha, levels, palette=tile)
        # Nearest keeps the flat colours exact; the alpha is scaled smoothly.
        tile_pixels = cv2.resize(poster, size, interpolation=cv2.INTER_NEAREST)
        tile_pixels[..., 3] = cv2.resize(alpha, size, interpolation=cv2.INTER_AREA)
        grid[top:bottom, left:right] = tile_pixels
    return grid


def popart(rgba: RGBA, params: Params) -> RGBA:
    levels = integer(params, "levels")
    indices = poster_indices(rgba, number(params, "contrast"), number(params, "saturation"), levels)
    alpha = rgba[..., 3]
    if choice(params, "layout") == "warhol":
        return warhol_grid(indices, alpha, levels)
    return paint(indices, alpha, levels)
