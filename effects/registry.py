"""The effects by name. Plugins may add their own with `register`."""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from effects.base import RGBA, Effect
from effects.catalog import BUILTIN_EFFECTS
from effects.exceptions import UnknownEffect

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
