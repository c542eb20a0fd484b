"""Effects that misbehave on purpose, loaded by the test workers through CUTFX_EFFECT_PLUGINS."""

from __future__ import annotations

import os
from pathlib import Path

from effects.base import RGBA, Effect
from effects.params import Params
from effects.registry import register

CRASH_MARKER_ENV = "CUTFX_TEST_CRASH_MARKER"


def explode(rgba: RGBA, params: Params) -> RGBA:
    raise ValueError("this effect always fails")


def crash_once(rgba: RGBA, params: Params) -> RGBA:
    """Kill the worker process the first time, as an OOM kill would; work the second time."""
    marker = Path(os.environ[CRASH_MARKER_ENV])
    if not marker.exists():
        marker.write_text("crashed once")
        os._exit(1)
    return rgba.copy()


register(Effect("explode", "Always raises (test only).", explode))
register(Effect("crash_once", "Kills its worker once (test only).", crash_once))
