"""A change of look fails here; rewrite the goldens with `python -m tests.effects.goldens`."""

from __future__ import annotations

import numpy as np
import pytest

from effects import EFFECT_NAMES, apply_effect
from tests.effects.goldens import load_golden
from tests.effects.inputs import GOLDEN_INPUTS

#: Mean absolute difference per channel (0..255) a refactor may introduce (float rounding).
MAX_MEAN_ABS_ERROR = 0.5
#: Dithering flips whole dots when one pixel's error changes: compare its density instead.
MAX_DOT_DENSITY_CHANGE = 0.01


@pytest.mark.parametrize("effect", EFFECT_NAMES)
@pytest.mark.parametrize("input_name", list(GOLDEN_INPUTS))
def test_matches_golden(effect, input_name):
    rendered = apply_effect(effect, GOLDEN_INPUTS[input_name]()).astype(np.int16)
    golden = load_golden(input_name, effect).astype(np.int16)
    assert rendered.shape == golden.shape
    assert np.array_equal(rendered[..., 3], golden[..., 3])
    error = np.abs(rendered[..., :3] - golden[..., :3]).mean()
    if effect == "dithering":
        density_change = abs((rendered[..., 0] == 0).mean() - (golden[..., 0] == 0).mean())
        assert density_change <= MAX_DOT_DENSITY_CHANGE
        assert error < 255 * 0.05
    else:
        assert error <= MAX_MEAN_ABS_ERROR, f"{effect} on {input_name} drifted by {error:.3f}"


def test_golden_check_catches_a_change_of_look():
    """The tolerance is tight enough to notice a modest change of a parameter."""
    rgba = GOLDEN_INPUTS["cat"]()
    golden = load_golden("cat", "enhancedblackwhite").astype(np.int16)
    changed = apply_effect("enhancedblackwhite", rgba, {"contrast": 1.3}).astype(np.int16)
    assert np.abs(changed[..., :3] - golden[..., :3]).mean() > MAX_MEAN_ABS_ERROR
