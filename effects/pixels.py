"""Pixel helpers the effects share (OpenCV plane operations)."""

from __future__ import annotations

import zlib

import cv2
import numpy as np
import numpy.typing as npt

from effects.registry import RGBA


def grey_with_alpha(grey: npt.NDArray[np.uint8], rgba: RGBA) -> RGBA:
    return np.asarray(cv2.merge([grey, grey, grey, rgba[..., 3].copy()]), dtype=np.uint8)


def derived_seed(rgba: RGBA) -> int:
    """A seed that follows from the pixels, so re-running a job gives the same bytes."""
    return zlib.crc32(np.ascontiguousarray(rgba).data)


def channel_mix(rgba: RGBA, weights: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """w_r·R + w_g·G + w_b·B per pixel, as float32 H×W.

    Works plane by plane: numpy's dot over the strided RGB view of an RGBA array,
    or cv2.transform on four channels, are 5–20× slower.
    """
    red, green, blue, _ = cv2.split(rgba)
    w_red, w_green, w_blue = (np.float32(w) for w in np.asarray(weights, dtype=np.float32))
    mixed: npt.NDArray[np.float32] = red * w_red + green * w_green + blue * w_blue
    return mixed
