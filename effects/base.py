"""Effect and parameter descriptions, and the validation of client parameters."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from effects.exceptions import InvalidEffectParameter

RGBA = npt.NDArray[np.uint8]
ParamValue = bool | int | float | None
Params = dict[str, ParamValue]
EffectFunction = Callable[[RGBA, Params], RGBA]

_TYPE_NAMES: dict[type, str] = {bool: "boolean", int: "integer", float: "number"}


@dataclass(frozen=True)
class Param:
    """One effect parameter: its type, default and inclusive range."""

    name: str
    kind: type
    default: ParamValue
    minimum: float | None = None
    maximum: float | None = None
    nullable: bool = False
    description: str = ""

    def validate(self, effect: str, value: object) -> ParamValue:
        if value is None:
            if self.nullable:
                return None
            raise InvalidEffectParameter(effect, self.name, "must not be null")
        coerced = self._coerce(effect, value)
        if isinstance(coerced, bool):
            return coerced
        if self.minimum is not None and coerced < self.minimum:
            raise InvalidEffectParameter(
                effect, self.name, f"{coerced} is below the minimum {self.minimum}"
            )
        if self.maximum is not None and coerced > self.maximum:
            raise InvalidEffectParameter(
                effect, self.name, f"{coerced} is above the maximum {self.maximum}"
            )
        return coerced

    def _coerce(self, effect: str, value: object) -> bool | int | float:
        # JSON has one number type, so an integral float is a fine integer, but
        # a bool is never a number even though Python says it is an int.
        is_bool = isinstance(value, bool)
        if self.kind is bool and is_bool:
            return bool(value)
        if self.kind is int and not is_bool:
            if isinstance(value, int):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
        if self.kind is float and isinstance(value, (int, float)) and not is_bool:
            if not np.isfinite(value):
                raise InvalidEffectParameter(effect, self.name, "must be a finite number")
            return float(value)
        raise InvalidEffectParameter(
            effect, self.name, f"must be a {_TYPE_NAMES[self.kind]}, got {value!r}"
        )

    def schema(self) -> dict[str, Any]:
        """JSON-schema-like description, served by GET /v1/effects."""
        described: dict[str, Any] = {
            "type": _TYPE_NAMES[self.kind],
            "default": self.default,
        }
        if self.nullable:
            described["nullable"] = True
        if self.minimum is not None:
            described["minimum"] = self.minimum
        if self.maximum is not None:
            described["maximum"] = self.maximum
        if self.description:
            described["description"] = self.description
        return described


@dataclass(frozen=True)
class Effect:
    """A named effect: its parameters and its pure function."""

    name: str
    description: str
    function: EffectFunction
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
        return self.function(rgba, self.validate_params(raw_params))

    def schema(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "params": {param.name: param.schema() for param in self.params},
        }


def check_rgba(rgba: np.ndarray) -> None:
    if rgba.dtype != np.uint8 or rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError(f"expected uint8 H×W×4 RGBA, got {rgba.dtype} {rgba.shape}")


def grey_with_alpha(grey: npt.NDArray[np.uint8], rgba: RGBA) -> RGBA:
    return np.asarray(cv2.merge([grey, grey, grey, rgba[..., 3].copy()]), dtype=np.uint8)


def derived_seed(rgba: RGBA) -> int:
    """A seed that follows from the pixels, so re-running a job gives the same bytes."""
    return zlib.crc32(np.ascontiguousarray(rgba).data)


def number(params: Params, name: str) -> float:
    """A validated numeric parameter as float (validation already checked its type)."""
    value = params[name]
    if not isinstance(value, (int, float)):
        raise TypeError(f"parameter {name} is {value!r}, not a number")
    return float(value)


def integer(params: Params, name: str) -> int:
    return int(number(params, name))


def channel_mix(rgba: RGBA, weights: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """w_r·R + w_g·G + w_b·B per pixel, as float32 H×W.

    Works plane by plane: numpy's dot over the strided RGB view of an RGBA array,
    or cv2.transform on four channels, are 5–20× slower.
    """
    red, green, blue, _ = cv2.split(rgba)
    w_red, w_green, w_blue = (np.float32(w) for w in np.asarray(weights, dtype=np.float32))
    mixed: npt.NDArray[np.float32] = red * w_red + green * w_green + blue * w_blue
    return mixed
