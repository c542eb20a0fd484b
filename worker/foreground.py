"""The foreground colours of a cutout, in torch on the model's device.

pymatting's `estimate_foreground_ml` (Germer et al., "Fast Multi-Level Foreground
Estimation") ported to torch: start from the mean foreground and background colours, and
at each level of a pyramid from 1×1 up to the photo's size, solve each pixel's 2×2 system
with its four neighbours a few times. pymatting's CPU kernel updates pixels in place, in
scan order; here a whole level is updated at once (as its GPU kernels do), so a GPU runs
it in a few milliseconds, a CPU needs no compiler, and the results differ from pymatting's
by a small tolerance (tests/worker/test_foreground.py).

The colours are kept channel first (3×H×W) while solving: the per-pixel weights (1×H×W)
then broadcast over whole rows, which the CPU's vector units run, where beside H×W×3
colours each weight met a run of three.
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
#: Left, right, up, down, as (axis, step) on a C×H×W tensor: a pixel's neighbour one step
#: along one axis, the border pixel its own neighbour.
NEIGHBOURS = ((-1, -1), (-1, 1), (-2, -1), (-2, 1))


def _nearest(pixels: Any, height: int, width: int) -> Any:
    """C×H×W pixels resized to height×width by pymatting's nearest-neighbour index rule
    (x_src = x_dst · w_src // w_dst)."""
    import torch

    source_height, source_width = pixels.shape[-2:]
    if (source_height, source_width) == (height, width):
        return pixels
    rows = torch.clamp(
        torch.arange(height, device=pixels.device) * source_height // height, max=source_height - 1
    )
    columns = torch.clamp(
        torch.arange(width, device=pixels.device) * source_width // width, max=source_width - 1
    )
    picked_rows = pixels.index_select(-2, rows)
    # A gather along the rows, where index_select on the last axis ran 4× slower.
    return torch.gather(picked_rows, -1, columns.expand(*picked_rows.shape[:-1], width))


def _neighbour_slices(size: int, step: int) -> tuple[int, int, int]:
    """Along an axis of `size` pixels, for the neighbour one `step` away: where the
    size − 1 pixels whose neighbour lies inside start, where those neighbours start, and
    the border pixel that is its own neighbour."""
    return (1, 0, 0) if step < 0 else (0, 1, size - 1)


def _shifted(pixels: Any, axis: int, step: int) -> Any:
    """Each pixel's neighbour one `step` along `axis`, the border repeated."""
    size = pixels.shape[axis]
    start, source, _ = _neighbour_slices(size, step)
    shifted = pixels.clone()
    shifted.narrow(axis, start, size - 1).copy_(pixels.narrow(axis, source, size - 1))
    return shifted


def _add_weighted_neighbours(total: Any, weight: Any, pixels: Any, axis: int, step: int) -> None:
    """total += weight × each pixel's neighbour one `step` along `axis` (the border
    repeated), in place: two slices multiplied and added in one pass each, where a shifted
    copy of `pixels` would be written and read again."""
    size = pixels.shape[axis]
    inner = size - 1
    start, source, edge = _neighbour_slices(size, step)
    total.narrow(axis, start, inner).addcmul_(
        weight.narrow(axis, start, inner), pixels.narrow(axis, source, inner)
    )
    total.narrow(axis, edge, 1).addcmul_(weight.narrow(axis, edge, 1), pixels.narrow(axis, edge, 1))


@dataclass(frozen=True)
class _LevelSystem:
    """What every sweep of one level shares: each pixel's 2×2 system but for the
    neighbours' colours, which alone change from sweep to sweep (all 1×H×W or 3×H×W)."""

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
    for axis, step in NEIGHBOURS:
        weight = REGULARIZATION + GRADIENT_WEIGHT * (a0 - _shifted(alpha, axis, step)).abs()
        a00 = a00 + weight
        a11 = a11 + weight
        weights.append(weight)
    inverse = 1.0 / (a00 * a11 - a01 * a01)
    return _LevelSystem(
        weights=tuple(weights),
        fg_base=a0 * image,
        bg_base=a1 * image,
        inverse_a00=inverse * a00,
        inverse_a01=inverse * a01,
        inverse_a11=inverse * a11,
    )


def _sweep(system: _LevelSystem, fg: Any, bg: Any) -> tuple[Any, Any]:
    """One update of every pixel's foreground and background colour."""
    b0, b1 = system.fg_base.clone(), system.bg_base.clone()
    for weight, (axis, step) in zip(system.weights, NEIGHBOURS, strict=True):
        _add_weighted_neighbours(b0, weight, fg, axis, step)
        _add_weighted_neighbours(b1, weight, bg, axis, step)
    fg = (system.inverse_a11 * b0).addcmul_(system.inverse_a01, b1, value=-1).clamp_(0, 1)
    bg = (system.inverse_a00 * b1).addcmul_(system.inverse_a01, b0, value=-1).clamp_(0, 1)
    return fg, bg


def estimate_foreground(image: Any, alpha: Any) -> Any:
    """The foreground colours (H×W×3, 0..1) of `image` (H×W×3, 0..1) under `alpha` (H×W)."""
    height0, width0 = alpha.shape
    pixels = image.permute(2, 0, 1).contiguous()
    matte = alpha[None]
    opaque, clear = alpha > 0.9, alpha < 0.1
    fg = (pixels[:, opaque].sum(1) / (opaque.sum() + 1e-5)).view(3, 1, 1)
    bg = (pixels[:, clear].sum(1) / (clear.sum() + 1e-5)).view(3, 1, 1)
    levels = math.ceil(math.log2(max(width0, height0)))
    for level in range(levels + 1):
        width = round(width0 ** (level / levels))
        height = round(height0 ** (level / levels))
        fg, bg = _nearest(fg, height, width), _nearest(bg, height, width)
        system = _level_system(_nearest(pixels, height, width), _nearest(matte, height, width))
        small = width <= SMALL_SIZE and height <= SMALL_SIZE
        for _ in range(SMALL_ITERATIONS if small else BIG_ITERATIONS):
            fg, bg = _sweep(system, fg, bg)
    return fg.permute(1, 2, 0).contiguous()


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


def matting_for(device: str) -> Any:
    """The foreground estimation: the torch port of pymatting's, on the model's device.

    On a GPU, pymatting's CPU kernel was most of a job's time. On a CPU, pymatting's
    kernel is numba code that a worker's first start spent a minute or more compiling;
    the torch port needs no compiler, and stays within the parity bounds of
    tests/worker/test_foreground.py."""
    return TorchForeground(device)
