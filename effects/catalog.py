"""The built-in effects as the API sees them: names, parameters and where each is implemented.

Importing this module loads no image code: each effect's function is named by
"module:function" and imported when the effect first runs, so the API process,
which only validates parameters and describes effects, never loads OpenCV.
"""

from __future__ import annotations

from effects.base import Effect
from effects.params import Param

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
