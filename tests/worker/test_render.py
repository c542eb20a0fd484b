"""The output options' pure image functions, checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from shared.output import OutputOptions, fitted_size
from worker.render import Box, cover, crop_box, over, render, subject_box, subject_facts


def cutout(height: int = 40, width: int = 60) -> np.ndarray:
    rgba = np.zeros((height, width, 4), dtype=np.uint8)
    rgba[..., :3] = (10, 200, 30)
    rgba[10:20, 20:35, 3] = 255
    return rgba


def no_photo() -> np.ndarray:
    raise AssertionError("no photo should be read")


def test_the_subject_box_and_coverage():
    alpha = cutout()[..., 3]
    assert subject_box(alpha) == Box(20, 10, 15, 10)
    assert subject_box(np.zeros((5, 5), np.uint8)) is None
    facts = subject_facts(alpha)
    assert facts == {"x": 20, "y": 10, "width": 15, "height": 10, "coverage": 0.0625}


@pytest.mark.parametrize(
    ("margin", "expected"),
    [
        ((0, "px"), Box(20, 10, 15, 10)),
        ((5, "px"), Box(15, 5, 25, 20)),
        ((100, "px"), Box(0, 0, 60, 40)),  # never past the frame
        ((20, "%"), Box(17, 8, 21, 14)),
    ],
)
def test_the_crop_box_grows_by_the_margin_within_the_frame(margin, expected):
    assert crop_box(cutout()[..., 3], margin) == expected


def test_over_composites_with_partial_alphas():
    fg = np.array([[[255, 0, 0, 128]]], dtype=np.uint8)
    bg = np.array([[[0, 0, 255, 255]]], dtype=np.uint8)
    assert over(fg, bg).tolist() == [[[128, 0, 127, 255]]]
    clear = np.array([[[0, 255, 0, 0]]], dtype=np.uint8)
    half_bg = np.array([[[0, 0, 255, 128]]], dtype=np.uint8)
    assert over(clear, half_bg).tolist() == [[[0, 0, 255, 128]]]


def test_cover_fills_the_frame_and_cuts_the_overflow():
    photo = np.zeros((10, 40, 3), dtype=np.uint8)
    photo[:, 20:] = 255
    covered = cover(photo, 30, 30)
    assert covered.shape == (30, 30, 3)
    assert covered[0, 0, 0] == 0
    assert covered[0, -1, 0] == 255


@pytest.mark.parametrize(
    ("size", "expected"),
    [("full", (600, 400)), ("300", (300, 200)), ("5000", (600, 400)), ("preview", (600, 400))],
)
def test_sizes_fit_and_never_enlarge(size, expected):
    assert fitted_size(600, 400, size) == expected


def test_preview_fits_a_quarter_megapixel_keeping_the_aspect():
    width, height = fitted_size(1200, 800, "preview")
    assert width * height <= 250_000
    assert (width, height) == (612, 408)


def test_render_in_order_crop_background_size():
    options = OutputOptions(background="#0000ffff", crop=True, crop_margin="5px", size="10")
    out = render(cutout(), options, no_photo, no_photo)
    assert out.shape == (8, 10, 4)
    assert (out[..., 3] == 255).all()
    assert tuple(out[0, 0]) == (0, 0, 255, 255), "the corner is background"
    assert tuple(out[4, 5, :3]) == (10, 200, 30), "the middle is the subject"


def test_render_alpha_only_is_the_mask():
    out = render(cutout(), OutputOptions(channels="alpha", crop=True), no_photo, no_photo)
    assert out.shape == (10, 15)
    assert (out == 255).all()


def test_render_with_defaults_changes_nothing():
    rgba = cutout()
    assert np.array_equal(render(rgba, OutputOptions(), no_photo, no_photo), rgba)
