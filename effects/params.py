"""Effect parameters: their description, and the validation of what clients send."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from effects.exceptions import InvalidEffectParameter

ParamValue = bool | int | float | str | None
Params = dict[str, ParamValue]

_TYPE_NAMES: dict[type, str] = {bool: "boolean", int: "integer", float: "number", str: "string"}


@dataclass(frozen=True)
class Param:
    """One effect parameter: its type, default and inclusive range (or, for a string,
    its choices)."""

    name: str
    kind: type
    default: ParamValue
    minimum: float | None = None
    maximum: float | None = None
    nullable: bool = False
    description: str = ""
    choices: tuple[str, ...] = ()

    def validate(self, effect: str, value: object) -> ParamValue:
        if value is None:
            if self.nullable:
                return None
            raise InvalidEffectParameter(effect, self.name, "must not be null")
        coerced = self._coerce(effect, value)
        if isinstance(coerced, (bool, str)):
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

    def _coerce(self, effect: str, value: object) -> bool | int | float | str:
        # JSON has one number type, so an integral float is a fine integer, but
        # a bool is never a number even though Python says it is an int.
        is_bool = isinstance(value, bool)
        if self.kind is str and isinstance(value, str):
            if value not in self.choices:
                raise InvalidEffectParameter(
                    effect, self.name, f"must be one of {', '.join(self.choices)}, got {value!r}"
                )
            return value
        if self.kind is bool and is_bool:
            return bool(value)
        if self.kind is int and not is_bool:
            if isinstance(value, int):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
        if self.kind is float and isinstance(value, (int, float)) and not is_bool:
            if not math.isfinite(value):
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
        if self.choices:
            described["enum"] = list(self.choices)
        if self.minimum is not None:
            described["minimum"] = self.minimum
        if self.maximum is not None:
            described["maximum"] = self.maximum
        if self.description:
            described["description"] = self.description
        return described


def number(params: Params, name: str) -> float:
    """A validated numeric parameter as float (validation already checked its type)."""
    value = params[name]
    if not isinstance(value, (int, float)):
        raise TypeError(f"parameter {name} is {value!r}, not a number")
    return float(value)


def integer(params: Params, name: str) -> int:
    return int(number(params, name))


def choice(params: Params, name: str) -> str:
    """A validated string parameter (one of its choices)."""
    value = params[name]
    if not isinstance(value, str):
        raise TypeError(f"parameter {name} is {value!r}, not a string")
    return value
