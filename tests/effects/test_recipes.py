"""Check the vectorised effects against effects.md's recipes written out by hand."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from effects import apply_effect
from effects.error_diffusion import diffuse_on_grid
from effects.popart import (
    BLACK,
    BLUE_VIOLET,
    DEEP_SKY_BLUE,
    HOT_PINK,
    LIME_GREEN,
    RED_ORANGE,
    SPRING_GREEN,
    WARHOL_PALETTES,
)
from tests.effects.inputs import GOLDEN_INPUTS, random_cutout
from tests.effects.popart_reference import reference_popart


def uniform(rgb, alpha=255, size=(4, 4)):
    rgba = np.zeros((*size, 4), dtype=np.uint8)
    rgba[..., :3] = rgb
    rgba[..., 3] = alpha
    return rgba


@pytest.mark.parametrize(
    ("rgb", "expected"),
    [
        ((255, 0, 0), RED_ORANGE),  # red leads, R+G+B = 255 is odd
        ((0, 255, 0), LIME_GREEN),  # green leads, odd
        ((128, 128, 128), HOT_PINK),  # posterised to 127.5s: Y = 127.5 is in (100, 130]
        ((255, 255, 255), DEEP_SKY_BLUE),  # Y = 255 > 240
        ((0, 0, 0), BLACK),
        ((0, 0, 255), BLACK),  # blue leads, but Y = 18.4 < 40: black is final
        ((140, 200, 140), SPRING_GREEN),  # (127.5, 255, 127.5): 510 mod 2 = 0
        ((140, 140, 200), BLUE_VIOLET),  # (127.5, 127.5, 255): blue family, index 0
    ],
)
def test_popart_colours_by_hand(rgb, expected):
    out = apply_effect("popart", uniform(rgb))
    assert tuple(out[0, 0, :3]) == expected


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"contrast": 1.3, "saturation": 0.7, "levels": 5},
        {"levels": 2},
        {"contrast": 4.1, "saturation": 3.3, "levels": 8},
    ],
)
def test_popart_is_the_sources_poster_pixel_for_pixel(params):
    inputs = [make() for make in GOLDEN_INPUTS.values()] + [random_cutout(64, 80, seed=7)]
    for rgba in inputs:
        expected = reference_popart(
            rgba,
            params.get("contrast", 2.5),
            params.get("saturation", 2.0),
            params.get("levels", 3),
        )
        out = apply_effect("popart", rgba, params)
        assert np.array_equal(out, expected), f"{(out != expected).any(-1).mean():.2%} differ"


def test_the_warhol_tiles_are_the_poster_in_four_palettes():
    rgba = GOLDEN_INPUTS["cat"]()
    poster = apply_effect("popart", rgba)
    grid = apply_effect("popart", rgba, {"layout": "warhol"})
    height, width = rgba.shape[:2]
    tiles = [
        grid[: height // 2, : width // 2],
        grid[: height // 2, width // 2 :],
        grid[height // 2 :, : width // 2],
        grid[height // 2 :, width // 2 :],
    ]
    for tile, palette in zip(tiles, WARHOL_PALETTES, strict=True):
        size = (tile.shape[1], tile.shape[0])
        expected = cv2.resize(poster, size, interpolation=cv2.INTER_NEAREST)[..., :3].copy()
        swapped = expected.copy()
        for before, after in palette.items():
            swapped[np.all(expected == before, axis=-1)] = after
        assert np.array_equal(tile[..., :3], swapped)
        assert np.array_equal(
            tile[..., 3], cv2.resize(rgba[..., 3], size, interpolation=cv2.INTER_AREA)
        )


def test_black_and_white_film_curve_by_hand():
    g = 0.5
    shadows = (1.1 * g) ** 1.25 * 0.92
    highlights = 1 - ((1 - g) * 1.05) ** 0.75 * 0.95
    blend = min(max((g - 0.4 + 0.15) / 0.3, 0), 1)
    expected = round(255 * min(max((shadows * (1 - blend) + highlights * blend) * 1.12, 0), 1))
    # A uniform grey whose Tri-X grey is 0.5: no detail to sharpen, nothing bright to glow.
    out = apply_effect(
        "enhancedblackwhite",
        uniform((127.5, 127.5, 127.5)),
        {"grain_strength": 0, "preserve_highlights": False},
    )
    assert abs(int(out[0, 0, 0]) - expected) <= 1


def reference_diffusion(grey, threshold, opaque):
    work = grey.astype(np.float64).copy()
    height, width = work.shape
    black = np.zeros((height, width), dtype=bool)
    for y in range(height):
        for x in range(width):
            if not opaque[y, x]:
                continue
            new = 0 if work[y, x] < threshold[y, x] else 255
            black[y, x] = new == 0
            err = work[y, x] - new
            for dy, dx, share in ((0, 1, 7), (1, -1, 3), (1, 0, 5), (1, 1, 1)):
                ny, nx = y + dy, x + dx
                if 0 <= ny < height and 0 <= nx < width:
                    work[ny, nx] += err * share / 16
    return black


def test_compiled_error_diffusion_equals_the_plain_loop():
    rgba = random_cutout(23, 31, seed=3)
    grey = rgba[..., 0].astype(np.float32)
    threshold = np.full_like(grey, 128.0)
    threshold[:, ::2] = 100.0
    opaque = rgba[..., 3] > 0
    assert np.array_equal(
        diffuse_on_grid(grey, threshold, opaque), reference_diffusion(grey, threshold, opaque)
    )
