"""Pure image effects on RGBA cutouts, found by name through the registry."""

from effects.exceptions import EffectError, InvalidEffectParameter, UnknownEffect
from effects.params import Param
from effects.registry import EFFECT_NAMES, Effect, apply_effect, get_effect, list_effects

__all__ = [
    "EFFECT_NAMES",
    "Effect",
    "EffectError",
    "InvalidEffectParameter",
    "Param",
    "UnknownEffect",
    "apply_effect",
    "get_effect",
    "list_effects",
]
