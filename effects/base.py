"""An effect: its name, parameters and pure function, the function loaded when first used."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from effects.exceptions import InvalidEffectParameter
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
