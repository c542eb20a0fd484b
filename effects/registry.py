"""The effects by name: what an effect is (its name, parameters and pure function), the
built-in ones, and the registry that plugins may add to with `register`.

Importing this module loads no image code: each built-in effect's function is named by
"module:function" and imported when the effect first runs, so the API process, which
only validates parameters and describes effects, never loads OpenCV.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from effects.exceptions import InvalidEffectParameter, UnknownEffect
from effects.params import Param, Params

RGBA = npt.NDArray[np.uint8]
EffectFunction = Callable[[RGBA, Params], RGBA]


@dataclass(frozen=True)
class Effect:
    """A named effect: its parameters and its pure function.

    `function` is the function itself, or "module:function" to import it on
    first use (the built-ins, so that describing them loads no image code).
    """

    name: str
    description: str
    function: EffectFunction | str
    params: tuple[Param, ...] = field(default_factory=tuple)
    #: Few flat colours (posters, dots): lossless WebP is smaller, faster and exact there,
    #: where lossy WebP would smear the palette.
    flat_colours: bool = False

    def validate_params(self, raw: Mapping[str, object] | None) -> Params:
        """Complete a client's parameters with defaults, or raise InvalidEffectParameter."""
        raw = raw or {}
        known = {param.name: param for param in self.params}
        for name in raw:
            if name not in known:
                raise InvalidEffectParameter(self.name, name, "unknown parameter")
        return {
            name: param.validate(self.name, raw[name]) if name in raw else param.default
            for name, param in known.items()
        }

    def apply(self, rgba: RGBA, raw_params: Mapping[str, object] | None = None) -> RGBA:
        check_rgba(rgba)
        return self.implementation()(rgba, self.validate_params(raw_params))

    def implementation(self) -> EffectFunction:
        if not isinstance(self.function, str):
            return self.function
        module_name, _, attribute = self.function.partition(":")
        loaded: EffectFunction = getattr(importlib.import_module(module_name), attribute)
        return loaded

    def schema(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "params": {param.name: param.schema() for param in self.params},
        }


def check_rgba(rgba: np.ndarray) -> None:
    if rgba.dtype != np.uint8 or rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError(f"expected uint8 H×W×4 RGBA, got {rgba.dtype} {rgba.shape}")


# --- the built-in effects -------------------------------------------------------------------

COLOR = Effect(
    name="color",
    description="The subject in full colour on a transparent background.",
    function="effects.color:color",
)


ENHANCEDBLACKWHITE = Effect(
    name="enhancedblackwhite",
    description="Tri-X film black and white: film curve, mid-tone sharpening, halation, grain.",
    function="effects.enhancedblackwhite:enhanced_black_white",
    params=(
        Param("contrast", float, 1.12, 0.5, 2.0, description="Film-curve contrast."),
        Param("edge_strength", float, 0.9, 0.0, 3.0, description="Mid-tone sharpening."),
        Param("halation_strength", float, 0.12, 0.0, 1.0, description="Glow around highlights."),
        Param("grain_strength", float, 0.08, 0.0, 0.5, description="Film grain; 0 turns it off."),
        Param("grain_size", float, 2.0, 1.0, 8.0, description="Coarse grain scale."),
        Param("preserve_highlights", bool, True, description="Lift the brightest tones."),
        Param(
            "seed",
            int,
            None,
            0,
            2**32 - 1,
            nullable=True,
            description="Grain seed; null derives it from the image.",
        ),
    ),
)


POPART = Effect(
    name="popart",
    description="Flat, loud poster in eight colours; strongly coloured areas keep their hue.",
    function="effects.popart:popart",
    flat_colours=True,
    params=(
        Param("contrast", float, 2.5, 0.5, 5.0, description="Per-channel contrast boost."),
        Param("saturation", float, 2.0, 0.0, 5.0, description="Saturation boost."),
        Param("levels", int, 3, 2, 8, description="Posterisation levels per channel."),
        Param(
            "layout",
            str,
            "single",
            choices=("single", "warhol"),
            description="single: one poster; warhol: a 2×2 grid of the subject in four palettes.",
        ),
    ),
)


DITHERING = Effect(
    name="dithering",
    description="Black dots on white, spaced Floyd–Steinberg error diffusion.",
    function="effects.dithering:dithering",
    flat_colours=True,
    params=(
        Param("pixel_spacing", int, 2, 1, 5, description="Grid step between dots."),
        Param("dot_size", int, 2, 1, 3, description="Side of each dot in pixels."),
        Param("gamma", float, 0.45, 0.3, 0.7, description="Tone curve before dithering."),
        Param("edge_strength", float, 0.3, 0.0, 2.0, description="Edge boost."),
        Param("adaptive_threshold", bool, True, description="Local threshold; false uses 128."),
    ),
)


#: The built-in effects, in the order a job runs them by default.
BUILTIN_EFFECTS: tuple[Effect, ...] = (COLOR, ENHANCEDBLACKWHITE, POPART, DITHERING)


# --- the registry -----------------------------------------------------------------------------

EFFECT_NAMES: tuple[str, ...] = tuple(effect.name for effect in BUILTIN_EFFECTS)

_registry: dict[str, Effect] = {effect.name: effect for effect in BUILTIN_EFFECTS}


def register(effect: Effect) -> None:
    if effect.name in _registry and _registry[effect.name] is not effect:
        raise ValueError(f"an effect named {effect.name!r} is already registered")
    _registry[effect.name] = effect


def load_plugins(module_names: tuple[str, ...]) -> None:
    """Import modules that register extra effects (setting CUTFX_EFFECT_PLUGINS)."""
    for module_name in module_names:
        importlib.import_module(module_name)


def get_effect(name: str) -> Effect:
    try:
        return _registry[name]
    except KeyError:
        raise UnknownEffect(name) from None


def list_effects() -> list[Effect]:
    return list(_registry.values())


def apply_effect(name: str, rgba: RGBA, params: Mapping[str, object] | None = None) -> RGBA:
    return get_effect(name).apply(rgba, params)
