from __future__ import annotations

import pytest

from effects import EFFECT_NAMES, InvalidEffectParameter, UnknownEffect, get_effect
from tests.effects.inputs import gradient_cutout


@pytest.mark.parametrize("effect", EFFECT_NAMES)
def test_defaults_fill_every_parameter(effect):
    described = get_effect(effect)
    assert described.validate_params({}) == {p.name: p.default for p in described.params}


@pytest.mark.parametrize(
    ("effect", "params", "bad"),
    [
        ("popart", {"contrast": 99}, "contrast"),
        ("popart", {"levels": 1}, "levels"),
        ("popart", {"levels": 2.5}, "levels"),
        ("popart", {"levels": True}, "levels"),
        ("popart", {"contrast": "high"}, "contrast"),
        ("popart", {"contrast": float("nan")}, "contrast"),
        ("popart", {"sparkle": 1}, "sparkle"),
        ("dithering", {"pixel_spacing": 6}, "pixel_spacing"),
        ("dithering", {"dot_size": 0}, "dot_size"),
        ("dithering", {"gamma": 0.2}, "gamma"),
        ("dithering", {"adaptive_threshold": 1}, "adaptive_threshold"),
        ("enhancedblackwhite", {"seed": -1}, "seed"),
        ("enhancedblackwhite", {"preserve_highlights": None}, "preserve_highlights"),
        ("color", {"anything": 1}, "anything"),
    ],
)
def test_invalid_parameters_name_the_parameter(effect, params, bad):
    with pytest.raises(InvalidEffectParameter) as caught:
        get_effect(effect).validate_params(params)
    assert caught.value.param == bad
    assert caught.value.effect == effect


def test_values_are_not_clamped_in_silence():
    with pytest.raises(InvalidEffectParameter):
        get_effect("dithering").apply(gradient_cutout(), {"pixel_spacing": 9})


def test_integral_numbers_are_accepted_for_integers_and_ints_for_floats():
    assert get_effect("popart").validate_params({"levels": 4.0, "contrast": 3})["levels"] == 4
    assert get_effect("popart").validate_params({"contrast": 3})["contrast"] == 3.0


def test_null_seed_is_allowed():
    assert get_effect("enhancedblackwhite").validate_params({"seed": None})["seed"] is None


def test_unknown_effect():
    with pytest.raises(UnknownEffect):
        get_effect("sepia")


@pytest.mark.parametrize("effect", EFFECT_NAMES)
def test_schema_describes_every_parameter(effect):
    schema = get_effect(effect).schema()
    assert schema["name"] == effect
    assert set(schema["params"]) == {p.name for p in get_effect(effect).params}
