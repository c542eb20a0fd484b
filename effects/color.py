"""color: the cutout itself, in full colour on a transparent background."""

from effects.base import RGBA, Effect, Params


def color(rgba: RGBA, params: Params) -> RGBA:
    return rgba.copy()


EFFECT = Effect(
    name="color",
    description="The subject in full colour on a transparent background.",
    function=color,
)
