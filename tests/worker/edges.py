"""A photo whose subject's edge is known to the pixel, and how far a mask's edge sits from
it: for the full-size (print) cutout's tests and bench/print_resolution.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

#: The subject and the background: apart in grey, as a pet on a sofa is.
SUBJECT_RGB = (200, 120, 60)
BACKGROUND_RGB = (40, 90, 160)
#: Sensor noise, in grey levels.
NOISE_SIGMA = 6.0
#: The network's own size in fast mode, and how soft its mask's edges are there.
NETWORK_SIDE = 384
NETWORK_BLUR_SIGMA = 1.0


@dataclass(frozen=True)
class Scene:
    photo: npt.NDArray[np.uint8]
    #: The subject's true coverage of each pixel (0..1).
    truth: npt.NDArray[np.float32]
    #: Each pixel's distance from the true edge, in pixels.
    distance: npt.NDArray[np.float32]


def disc_scene(width: int, height: int, seed: int = 0) -> Scene:
    """A disc (straight and curved edges at every angle) on a plain background, noisy."""
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float32)
    radius = 0.33 * min(width, height)
    signed = np.hypot(columns - 0.43 * width, rows - 0.5 * height) - radius
    truth = np.clip(0.5 - signed, 0.0, 1.0).astype(np.float32)
    subject = np.array(SUBJECT_RGB, np.float32)
    background = np.array(BACKGROUND_RGB, np.float32)
    colours = truth[..., None] * subject + (1 - truth[..., None]) * background
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(colours.shape, dtype=np.float32) * np.float32(NOISE_SIGMA)
    photo = np.clip(colours + noise, 0, 255).astype(np.uint8)
    return Scene(photo, truth, np.abs(signed).astype(np.float32))


def network_mask(scene: Scene) -> npt.NDArray[np.float32]:
    """The mask a network working at NETWORK_SIDE² gives: the truth at that size, soft."""
    small = cv2.resize(scene.truth, (NETWORK_SIDE, NETWORK_SIDE), interpolation=cv2.INTER_AREA)
    soft: Any = cv2.GaussianBlur(small, (0, 0), NETWORK_BLUR_SIGMA)
    return np.asarray(soft, np.float32)


def edge_error_px(scene: Scene, alpha: npt.NDArray[np.float32]) -> float:
    """How far the mask's edge (where alpha crosses one half) sits from the true edge: the
    99th percentile of its pixels' distances."""
    on_edge = np.abs(alpha - 0.5) < 0.1
    return float(np.percentile(scene.distance[on_edge], 99))


def bilinear(mask: npt.NDArray[np.float32], width: int, height: int) -> npt.NDArray[np.float32]:
    upsampled: Any = cv2.resize(mask, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.asarray(upsampled, np.float32)
