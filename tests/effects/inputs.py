"""Fixed inputs for the effect tests: a real photo and synthetic cutouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def soft_ellipse_alpha(height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    distance = ((yy - height / 2) / (height * 0.45)) ** 2 + ((xx - width / 2) / (width * 0.4)) ** 2
    return (np.clip((1 - distance) * 4, 0, 1) * 255).astype(np.uint8)


def cat_cutout() -> np.ndarray:
    """Chelsea the cat (CC0), a soft-edged oval cutout, downscaled to keep goldens small."""
    image = (
        Image.open(SAMPLES / "chelsea.png")
        .convert("RGB")
        .resize((225, 150), Image.Resampling.LANCZOS)
    )
    rgb = np.asarray(image)
    return np.dstack([rgb, soft_ellipse_alpha(*rgb.shape[:2])])


def gradient_cutout(height: int = 96, width: int = 128) -> np.ndarray:
    """Hue and brightness sweeps with a hard-edged square hole and soft edges."""
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    red = xx / (width - 1) * 255
    green = yy / (height - 1) * 255
    blue = (1 - xx / (width - 1)) * (yy / (height - 1)) * 255
    rgb = np.dstack([red, green, blue]).astype(np.uint8)
    alpha = soft_ellipse_alpha(height, width)
    alpha[height // 3 : height // 2, width // 3 : width // 2] = 0
    return np.dstack([rgb, alpha])


def random_cutout(height: int, width: int, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rgba = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    rgba[..., 3][rng.random((height, width)) < 0.2] = 0
    return rgba


GOLDEN_INPUTS = {"cat": cat_cutout, "gradient": gradient_cutout}
