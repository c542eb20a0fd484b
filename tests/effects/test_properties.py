"""The properties effects.md asks of every effect."""

from __future__ import annotations

import numpy as np
import pytest

from effects import EFFECT_NAMES, apply_effect
from effects.popart import PALETTE, POSTER_PALETTE
from tests.effects.inputs import cat_cutout, gradient_cutout, random_cutout

INPUTS = {
    "cat": cat_cutout(),
    "gradient": gradient_cutout(),
    "noise": random_cutout(37, 53),
    "one-pixel": random_cutout(1, 1),
    "one-row": random_cutout(1, 17),
}


@pytest.mark.parametrize("effect", EFFECT_NAMES)
@pytest.mark.parametrize("input_name", list(INPUTS))
def test_size_kept_and_alpha_kept_bit_for_bit(effect, input_name):
    rgba = INPUTS[input_name]
    out = apply_effect(effect, rgba)
    assert out.shape == rgba.shape
    assert out.dtype == np.uint8
    assert np.array_equal(out[..., 3], rgba[..., 3])


@pytest.mark.parametrize("effect", EFFECT_NAMES)
def test_same_input_and_params_give_the_same_bytes(effect):
    rgba = INPUTS["cat"]
    assert apply_effect(effect, rgba).tobytes() == apply_effect(effect, rgba.copy()).tobytes()


@pytest.mark.parametrize("effect", EFFECT_NAMES)
def test_input_is_not_modified(effect):
    rgba = INPUTS["gradient"]
    before = rgba.copy()
    apply_effect(effect, rgba)
    assert np.array_equal(rgba, before)


def test_color_is_the_cutout_itself():
    rgba = INPUTS["cat"]
    assert np.array_equal(apply_effect("color", rgba), rgba)


def test_black_and_white_is_grey():
    out = apply_effect("enhancedblackwhite", INPUTS["cat"])
    assert np.array_equal(out[..., 0], out[..., 1])
    assert np.array_equal(out[..., 1], out[..., 2])
    assert out[..., 0].std() > 10, "a real photo must keep its tones"


def test_black_and_white_grain_follows_the_seed():
    rgba = INPUTS["cat"]
    first = apply_effect("enhancedblackwhite", rgba, {"seed": 1})
    assert np.array_equal(first, apply_effect("enhancedblackwhite", rgba, {"seed": 1}))
    assert not np.array_equal(first, apply_effect("enhancedblackwhite", rgba, {"seed": 2}))
    no_grain = apply_effect("enhancedblackwhite", rgba, {"grain_strength": 0, "seed": 1})
    assert np.array_equal(
        no_grain, apply_effect("enhancedblackwhite", rgba, {"grain_strength": 0, "seed": 2})
    )


@pytest.mark.parametrize("input_name", ["cat", "gradient", "noise"])
def test_popart_paints_only_palette_colours_where_visible(input_name):
    rgba = INPUTS[input_name]
    out = apply_effect("popart", rgba)
    visible = out[rgba[..., 3] > 0][:, :3]
    palette = {tuple(colour) for colour in POSTER_PALETTE}
    used = {tuple(int(v) for v in colour) for colour in np.unique(visible, axis=0)}
    assert used <= palette
    assert len(used) >= 3, "a photo should use several poster colours"


@pytest.mark.parametrize("input_name", ["cat", "gradient", "noise"])
def test_the_warhol_grid_keeps_the_size_and_paints_only_palette_colours(input_name):
    rgba = INPUTS[input_name]
    out = apply_effect("popart", rgba, {"layout": "warhol"})
    assert out.shape == rgba.shape
    visible = out[out[..., 3] > 0][:, :3]
    used = {tuple(int(v) for v in colour) for colour in np.unique(visible, axis=0)}
    assert used <= {tuple(colour) for colour in PALETTE}


@pytest.mark.parametrize(
    "params", [{}, {"pixel_spacing": 1, "dot_size": 1}, {"pixel_spacing": 5, "dot_size": 3}]
)
def test_dithering_is_black_or_white_and_clear_where_transparent(params):
    rgba = INPUTS["cat"]
    out = apply_effect("dithering", rgba, params)
    assert set(np.unique(out[..., :3])) <= {0, 255}
    assert np.array_equal(out[..., 0], out[..., 1])
    assert (out[..., :3][rgba[..., 3] == 0] == 255).all(), "no dot where the cutout is clear"
    black_share = (out[..., 0][rgba[..., 3] > 0] == 0).mean()
    assert 0.02 < black_share < 0.9


def test_dithering_dots_sit_on_the_grid():
    rgba = INPUTS["gradient"]
    out = apply_effect("dithering", rgba, {"pixel_spacing": 4, "dot_size": 1})
    black_rows, black_cols = np.nonzero(out[..., 0] == 0)
    assert black_rows.size > 0
    assert (black_rows % 4 == 0).all()
    assert (black_cols % 4 == 0).all()
