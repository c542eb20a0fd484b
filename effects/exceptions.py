"""Errors raised by effects; the API maps them to HTTP 422."""

from shared.errors import CutfxError


class EffectError(CutfxError):
    """Base class of every error an effect raises on purpose."""

    code = "effect_failed"
    status = 422


class UnknownEffect(EffectError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown effect {name!r}")
        self.name = name


class InvalidEffectParameter(EffectError):
    """A parameter is unknown, of the wrong type or out of range."""

    def __init__(self, effect: str, param: str, reason: str) -> None:
        super().__init__(f"{effect}.{param}: {reason}")
        self.effect = effect
        self.param = param
        self.reason = reason
