"""Foreground estimation in torch, for CUDA workers: the colours of the subject, de-matted.

The same multi-level estimation as pymatting's `estimate_foreground_ml` (Germer et al.,
"Fast Multi-Level Foreground Estimation"): start from the mean foreground and background
colours, and at each level of a pyramid from 1×1 up to the photo's size, solve each
pixel's 2×2 system with its four neighbours a few times. pymatting's CPU kernel updates
pixels in place, in scan order; here a whole level is updated at once (as its GPU
kernels do), so a GPU runs it in a few milliseconds and the results differ from the
CPU's by a small tolerance (tests/worker/test_foreground.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

#: pymatting's defaults.
REGULARIZATION = 1e-5
SMALL_ITERATIONS = 10
BIG_ITERATIONS = 2
SMALL_SIZE = 32
GRADIENT_WEIGHT = 1.0
#: Left, right, up, down.
NEIGHBOURS = ((0, -1), (0, 1), (-1, 0), (1, 0))


def _nearest(pixels: Any, height: int, width: int) -> Any:
    """Nearest-neighbour resize with pymatting's index rule (x_src = x_dst · w_src // w_dst)."""
    import torch

    source_height, source_width = pixels.shape[:2]
    rows = torch.clamp(
        torch.arange(height, device=pixels.device) * source_height // height, max=source_height - 1
    )
    columns = torch.clamp(
        torch.arange(width, device=pixels.device) * source_width // width, max=source_width - 1
    )
    return pixels[rows][:, columns]


def _shifted(pixels: Any, dy: int, dx: int) -> Any:
    """Each pixel's neighbour at (dy, dx) (one step along one axis), the border repeated:
    two slices joined, no gather."""
    import torch

    axis, step = (0, dy) if dy else (1, dx)
    size = pixels.shape[axis]
    if step < 0:
        return torch.cat((pixels.narrow(axis, 0, 1), pixels.narrow(axis, 0, size - 1)), axis)
    return torch.cat((pixels.narrow(axis, 1, size - 1), pixels.narrow(axis, size - 1, 1)), axis)


@dataclass(frozen=True)
class _LevelSystem:
    """What every sweep of one level shares: each pixel's 2×2 system but for the
    neighbours' colours, which alone change from sweep to sweep."""

    weights: tuple[Any, ...]
    fg_base: Any
    bg_base: Any
    inverse_a00: Any
    inverse_a01: Any
    inverse_a11: Any


def _level_system(image: Any, alpha: Any) -> _LevelSystem:
    a0 = alpha
    a1 = 1.0 - a0
    a00, a01, a11 = a0 * a0, a0 * a1, a1 * a1
    weights = []
    for dy, dx in NEIGHBOURS:
        weight = REGULARIZATION + GRADIENT_WEIGHT * (a0 - _shifted(alpha, dy, dx)).abs()
        a00 = a00 + weight
        a11 = a11 + weight
        weights.append(weight[..., None])
    inverse = 1.0 / (a00 * a11 - a01 * a01)
    return _LevelSystem(
        weights=tuple(weights),
        fg_base=a0[..., None] * image,
        bg_base=a1[..., None] * image,
        inverse_a00=(inverse * a00)[..., None],
        inverse_a01=(inverse * a01)[..., None],
        inverse_a11=(inverse * a11)[..., None],
    )


def _sweep(system: _LevelSystem, fg: Any, bg: Any) -> tuple[Any, Any]:
    """One update of every pixel's foreground and background colour."""
    b0, b1 = system.fg_base, system.bg_base
    for weight, (dy, dx) in zip(system.weights, NEIGHBOURS, strict=True):
        b0 = b0 + weight * _shifted(fg, dy, dx)
        b1 = b1 + weight * _shifted(bg, dy, dx)
    fg = (system.inverse_a11 * b0 - system.inverse_a01 * b1).clamp(0, 1)
    bg = (system.inverse_a00 * b1 - system.inverse_a01 * b0).clamp(0, 1)
    return fg, bg


def estimate_foreground(image: Any, alpha: Any) -> Any:
    """The foreground colours (H×W×3, 0..1) of `image` (H×W×3, 0..1) under `alpha` (H×W)."""
    import torch

    height0, width0 = alpha.shape
    opaque, clear = alpha > 0.9, alpha < 0.1
    fg = (image[opaque].sum(0) / (opaque.sum() + 1e-5)).view(1, 1, 3)
    bg = (image[clear].sum(0) / (clear.sum() + 1e-5)).view(1, 1, 3)
    levels = math.ceil(math.log2(max(width0, height0)))
    for level in range(levels + 1):
        width = round(width0 ** (level / levels))
        height = round(height0 ** (level / levels))
        level_image = _nearest(image, height, width)
        level_alpha = _nearest(alpha, height, width)
        fg, bg = _nearest(fg, height, width), _nearest(bg, height, width)
        system = _level_system(level_image, level_alpha)
        small = width <= SMALL_SIZE and height <= SMALL_SIZE
        for _ in range(SMALL_ITERATIONS if small else BIG_ITERATIONS):
            fg, bg = _sweep(system, fg, bg)
    return torch.clamp(fg, 0, 1)


class TorchForeground:
    """transparent-background's `matting_fn` (numpy in, numpy out), run on `device`."""

    def __init__(self, device: str) -> None:
        self.device = device

    def __call__(
        self, image: npt.NDArray[np.float64], alpha: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float32]:
        import torch

        with torch.no_grad():
            pixels = torch.as_tensor(image, dtype=torch.float32, device=self.device)
            matte = torch.as_tensor(alpha, dtype=torch.float32, device=self.device)
            out: npt.NDArray[np.float32] = estimate_foreground(pixels, matte).cpu().numpy()
        return out
