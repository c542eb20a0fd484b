"""Floyd–Steinberg on a grid, vectorised along wavefronts, exactly as the scan-line loop.

A point (y, x) takes error from (y, x-1), (y-1, x-1), (y-1, x) and (y-1, x+1) only, so
every point of the wavefront x + 2y = t depends on earlier wavefronts alone: the points
of one wavefront are decided together, one numpy step each, W + 2H steps in all.

The result is bit for bit the scan-line loop's (tests/effects/test_error_diffusion.py
runs both): each point's value is the float32 sum of its errors added in the loop's
order (from the row above, left to right, then from the left), each addition done in
float64 and rounded to float32, as the loop's `work[...] += error * k` with a float64
error does. No compiler is needed, so no worker start waits for one.
"""

from __future__ import annotations

import itertools
from typing import TypeVar

import numpy as np
import numpy.typing as npt

Scalar = TypeVar("Scalar", bound=np.generic)

#: The shares of a decided point's error: to the next point right, then, on the row
#: below, down-left, down and down-right.
RIGHT_SHARE = 7.0 / 16.0
BELOW_SHARES = np.array([3.0 / 16.0, 5.0 / 16.0, 1.0 / 16.0])
WHITE = 255.0


def diffuse_on_grid(
    grey: npt.NDArray[np.float32],
    threshold: npt.NDArray[np.float32],
    opaque: npt.NDArray[np.bool_],
) -> npt.NDArray[np.bool_]:
    """Which grid points turn black, as visiting them in scan-line order decides."""
    height, width = grey.shape
    # One spare column each side and a spare row below take the errors sent off the grid,
    # so no step checks bounds; a transparent point sends an error of 0 (exactly nothing).
    stride = width + 2
    # Values held in float64 but always float32-exact: each sum is rounded to float32 as
    # the loop stores it.
    work = _padded(grey.astype(np.float32), stride).ravel().astype(np.float64)
    # Every grid point in wave order, and what each wave reads, gathered once: a wave is
    # then a slice of each.
    rows, columns = np.divmod(np.arange(height * width), width)
    wave_of = columns + 2 * rows
    order = np.argsort(wave_of, kind="stable")
    points = rows[order] * stride + columns[order] + 1
    limits = threshold.astype(np.float32).ravel()[order]
    shown = opaque.astype(np.bool_).ravel()[order]
    below = (points[:, None] + np.array([stride - 1, stride, stride + 1])).ravel()
    right = points + 1
    black = np.zeros(height * width, dtype=np.bool_)
    bounds = np.searchsorted(wave_of[order], np.arange(width + 2 * height - 1))
    for start, end in itertools.pairwise(bounds):
        value = work[points[start:end]]
        visible = shown[start:end]
        dark = (value < limits[start:end]) & visible
        black[start:end] = dark
        error = np.where(visible, value - np.where(dark, 0.0, WHITE), 0.0)
        # The row below first: in the loop, a point's error from the row above lands
        # before the error from its left neighbour, which this same wave also sends.
        # One wave's targets for the row below are all distinct, and so are its targets
        # to the right, so no addition is lost.
        _add(work, below[3 * start : 3 * end], (error[:, None] * BELOW_SHARES).ravel())
        _add(work, right[start:end], error * RIGHT_SHARE)
    decided = np.zeros(height * width, dtype=np.bool_)
    decided[order] = black
    return decided.reshape(height, width)


def _padded(plane: npt.NDArray[Scalar], stride: int) -> npt.NDArray[Scalar]:
    height, width = plane.shape
    padded = np.zeros((height + 1, stride), dtype=plane.dtype)
    padded[:height, 1 : width + 1] = plane
    return padded


def _add(
    work: npt.NDArray[np.float64], at: npt.NDArray[np.intp], amount: npt.NDArray[np.float64]
) -> None:
    """work[at] += amount as the loop adds: in float64, rounded to float32."""
    work[at] = (work[at] + amount).astype(np.float32)
