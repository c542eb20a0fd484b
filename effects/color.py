"""color: the cutout itself, in full colour on a transparent background."""

from effects.base import RGBA
from effects.params import Params


def color(rgba: RGBA, params: Params) -> RGBA:
    return rgba.copy()
