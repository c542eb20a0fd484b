"""enhancedblackwhite: Kodak Tri-X-like film black and white (effects.md)."""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
import numpy.typing as npt

from effects.params import Params, integer, number
from effects.pixels import derived_seed, grey_with_alpha
from effects.registry import RGBA

Grey = npt.NDArray[np.float32]

TRI_X_INTEGER_WEIGHTS = np.array([18, 72, 10])
SHARPEN_KERNEL = (5, 5)
SHARPEN_SIGMA = 1.2
HALATION_THRESHOLD = 0.75
HALATION_WIDE = ((21, 21), 7.0, 0.3)
HALATION_NARROW = ((9, 9), 2.5, 0.7)
GRAIN_FINE_SIGMA = 0.4
GRAIN_COARSE_SIGMA = 0.6
GRAIN_FINE_WEIGHT = 0.7
GRAIN_BLUR_SIGMA = 0.5
HIGHLIGHT_KNEE = 0.9


def film_curve(g: Grey, contrast: float) -> Grey:
    """Step 2 on a Tri-X grey in 0..1."""
    # cv2.pow is ~5× faster than np.power; both bases are >= 0 here.
    shadows = cv2.pow(g * np.float32(1.1), 1.25) * np.float32(0.92)
    highlights = 1 - cv2.pow((1 - g) * np.float32(1.05), 0.75) * np.float32(0.95)
    blend = np.clip((g - np.float32(0.25)) / np.float32(0.3), 0, 1)
    curved = (shadows * (1 - blend) + highlights * blend) * np.float32(contrast)
    return np.clip(curved, 0, 1, out=curved)


@lru_cache(maxsize=8)
def _curved_grey_table(contrast: float) -> Grey:
    full_scale = int(TRI_X_INTEGER_WEIGHTS.sum()) * 255
    levels = np.arange(full_scale + 1, dtype=np.float32) / np.float32(full_scale)
    return film_curve(levels.astype(np.float32), contrast)


def curved_grey(rgba: RGBA, contrast: float) -> Grey:
    """Steps 1 and 2 at once. The Tri-X grey of 8-bit RGB is one of 25,501 values
    (18R + 72G + 10B over 25,500), so the film curve is an exact table lookup."""
    red, green, blue, _ = cv2.split(rgba)
    r, g, b = (int(w) for w in TRI_X_INTEGER_WEIGHTS)
    index = red.astype(np.uint16) * r + green.astype(np.uint16) * g + blue.astype(np.uint16) * b
    curved: Grey = np.take(_curved_grey_table(contrast), index)
    return curved


def midtone_sharpen(g: Grey, strength: float) -> Grey:
    # In place where possible: at a megapixel, allocating each temporary costs as much
    # as the arithmetic on it.
    detail = np.subtract(g, cv2.GaussianBlur(g, SHARPEN_KERNEL, SHARPEN_SIGMA))
    midtone_weight = np.subtract(np.float32(1), g)
    midtone_weight *= g
    midtone_weight *= np.float32(4 * strength)
    detail *= midtone_weight
    detail += g
    return np.clip(detail, 0, 1, out=detail)


def halation(g: Grey, strength: float) -> Grey:
    # The mask is 0/1: blurring and mixing it as 8-bit 0/255 is exact to 1/255, far below
    # a grey level once scaled by the strength, and several times faster than float.
    bright = (g > HALATION_THRESHOLD).view(np.uint8) * np.uint8(255)
    (wide_kernel, wide_sigma, wide_weight), (narrow_kernel, narrow_sigma, narrow_weight) = (
        HALATION_WIDE,
        HALATION_NARROW,
    )
    halo = cv2.addWeighted(
        cv2.GaussianBlur(bright, wide_kernel, wide_sigma),
        wide_weight,
        cv2.GaussianBlur(bright, narrow_kernel, narrow_sigma),
        narrow_weight,
        0,
    )
    if not halo.any():
        return g
    glow = halo.astype(np.float32)
    glow *= np.float32(strength / 255.0)
    headroom = np.multiply(g, g)
    np.subtract(np.float32(1), headroom, out=headroom)
    glow *= headroom
    glow += g
    return np.clip(glow, 0, 1, out=glow)


def film_grain(g: Grey, strength: float, size: float, seed: int) -> Grey:
    height, width = g.shape
    rng = np.random.default_rng(seed)
    mixed = rng.standard_normal((height, width), dtype=np.float32)
    mixed *= np.float32(GRAIN_FINE_WEIGHT * GRAIN_FINE_SIGMA)
    coarse_shape = (max(1, round(height / size)), max(1, round(width / size)))
    coarse_small = rng.standard_normal(coarse_shape, dtype=np.float32)
    coarse = cv2.resize(coarse_small, (width, height), interpolation=cv2.INTER_LINEAR)
    # mixed = 0.7·fine + 0.3·coarse, fine ~ N(0, 0.4) and coarse ~ N(0, 0.6), in place.
    cv2.scaleAdd(coarse, (1 - GRAIN_FINE_WEIGHT) * GRAIN_COARSE_SIGMA, mixed, dst=mixed)
    grain: Grey = np.asarray(cv2.GaussianBlur(mixed, (3, 3), GRAIN_BLUR_SIGMA), dtype=np.float32)
    shadow_weight = np.subtract(np.float32(1.2), g)
    np.clip(shadow_weight, 0.3, 1.0, out=shadow_weight)
    grain *= shadow_weight
    grain *= np.float32(strength)
    grain += g
    return np.clip(grain, 0, 1, out=grain)


def protect_highlights(g: Grey) -> Grey:
    lifted = g * np.float32(0.95) + np.float32(0.05)
    np.copyto(lifted, g, where=g <= HIGHLIGHT_KNEE)
    return lifted


def enhanced_black_white(rgba: RGBA, params: Params) -> RGBA:
    g = curved_grey(rgba, number(params, "contrast"))
    g = midtone_sharpen(g, number(params, "edge_strength"))
    g = halation(g, number(params, "halation_strength"))
    grain_strength = number(params, "grain_strength")
    if grain_strength > 0:
        seed = derived_seed(rgba) if params["seed"] is None else integer(params, "seed")
        g = film_grain(g, grain_strength, number(params, "grain_size"), seed)
    if params["preserve_highlights"]:
        g = protect_highlights(g)
    g = np.multiply(g, np.float32(255.0))
    grey = np.rint(g, out=g).astype(np.uint8)
    return grey_with_alpha(grey, rgba)
