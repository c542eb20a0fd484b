"""dithering: spaced Floyd–Steinberg dots (effects.md)."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from effects.params import Params, integer, number
from effects.pixels import channel_mix, grey_with_alpha
from effects.registry import RGBA

BT601 = np.array([0.299, 0.587, 0.114], dtype=np.float32)
EDGE_KERNEL = np.array([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], dtype=np.float32) / 8
THRESHOLD_BLUR = (7, 7)
LOCAL_THRESHOLD_WEIGHT = 0.7
FIXED_THRESHOLD = 128.0
WHITE = 255
BLACK = 0


def gamma_grey(rgba: RGBA, gamma: float) -> npt.NDArray[np.float32]:
    grey = channel_mix(rgba, BT601 / np.float32(255.0))
    grey = cv2.pow(grey, gamma) * np.float32(255.0)
    grey[rgba[..., 3] == 0] = WHITE
    return grey


def boost_edges(grey: npt.NDArray[np.float32], strength: float) -> npt.NDArray[np.float32]:
    edges = cv2.filter2D(grey, -1, EDGE_KERNEL)
    return np.clip(grey + np.float32(strength) * edges, 0, 255)


def threshold_map(grey: npt.NDArray[np.float32], adaptive: bool) -> npt.NDArray[np.float32]:
    if not adaptive:
        return np.full_like(grey, FIXED_THRESHOLD)
    local = cv2.GaussianBlur(grey, THRESHOLD_BLUR, 0)
    return LOCAL_THRESHOLD_WEIGHT * local + (1 - LOCAL_THRESHOLD_WEIGHT) * np.float32(
        FIXED_THRESHOLD
    )


def paint_dots(
    black_points: npt.NDArray[np.bool_], shape: tuple[int, int], spacing: int, dot_size: int
) -> npt.NDArray[np.bool_]:
    """Each black grid point covers a dot_size square whose corner is the point."""
    black = np.zeros(shape, dtype=bool)
    for dy in range(dot_size):
        for dx in range(dot_size):
            target = black[dy::spacing, dx::spacing]
            rows, cols = target.shape
            target |= black_points[:rows, :cols]
    return black


def dithering(rgba: RGBA, params: Params) -> RGBA:
    from effects.error_diffusion import diffuse_on_grid

    spacing = integer(params, "pixel_spacing")
    grey = boost_edges(gamma_grey(rgba, number(params, "gamma")), number(params, "edge_strength"))
    threshold = threshold_map(grey, bool(params["adaptive_threshold"]))
    opaque = rgba[..., 3] > 0
    black_points = diffuse_on_grid(
        np.ascontiguousarray(grey[::spacing, ::spacing]),
        np.ascontiguousarray(threshold[::spacing, ::spacing]),
        np.ascontiguousarray(opaque[::spacing, ::spacing]),
    )
    black = paint_dots(black_points, grey.shape, spacing, integer(params, "dot_size")) & opaque
    grey_out = np.where(black, np.uint8(BLACK), np.uint8(WHITE)).astype(np.uint8)
    return grey_with_alpha(grey_out, rgba)
