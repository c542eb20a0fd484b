"""color: the cutout itself, in full colour on a transparent background."""

from effects.params import Params
from effects.registry import RGBA


def color(rgba: RGBA, params: Params) -> RGBA:
    return rgba.copy()
