"""Effects that misbehave on purpose, loaded by the test workers through CUTFX_EFFECT_PLUGINS;
and the seams the fault and check tests need in those workers."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from effects.params import Params
from effects.registry import RGBA, Effect, register

CRASH_MARKER_ENV = "CUTFX_TEST_CRASH_MARKER"
#: While the file this names exists, local storage refuses every write (a storage outage).
STORAGE_FAULT_MARKER_ENV = "CUTFX_TEST_STORAGE_FAULT_MARKER"
SLOW_EFFECT_S = 4.0
#: While the file this names exists, every forward fails as a lost CUDA device does.
DEVICE_FAULT_MARKER_ENV = "CUTFX_TEST_DEVICE_FAULT_MARKER"
#: A photo of this one colour, and nothing else, gets an empty mask from the model: the
#: generated checkpoint's masks mean nothing, so the checks' tests feed theirs here.
NO_SUBJECT_COLOUR = (1, 2, 3)
#: A photo of this one colour gets an unsure mask from a fast-mode model (its middle half
#: transparent) and a sure one from a base-mode model: what escalation is for.
UNSURE_COLOUR = (4, 5, 6)
#: A photo of this one colour keeps the model's last step this long: a cutout that
#: outlasts the fault tests' visibility timeout (10 s) and the sweep after it (5 s).
LINGERING_COLOUR = (7, 8, 9)
LINGER_S = 18.0


def explode(rgba: RGBA, params: Params) -> RGBA:
    raise ValueError("this effect always fails")


def crash_once(rgba: RGBA, params: Params) -> RGBA:
    """Kill the worker process the first time, as an OOM kill would; work the second time."""
    marker = Path(os.environ[CRASH_MARKER_ENV])
    if not marker.exists():
        marker.write_text("crashed once")
        os._exit(1)
    return rgba.copy()


def slow(rgba: RGBA, params: Params) -> RGBA:
    """Long enough to kill its worker in the middle of it."""
    time.sleep(SLOW_EFFECT_S)
    return rgba.copy()


def hang(rgba: RGBA, params: Params) -> RGBA:
    """Never finishes on its own: only a time limit ends it."""
    while True:
        time.sleep(0.1)


def _fail_writes_while_marked() -> None:
    """Wrap the local backend's writes with an outage switch (the worker processes of the
    fault tests load this module as an effect plugin)."""
    marker = os.environ.get(STORAGE_FAULT_MARKER_ENV)
    if not marker:
        return
    from shared.errors import TransientStorageError
    from shared.storage import LocalStorage

    write = LocalStorage.put

    def put(self: LocalStorage, key: str, data: bytes, content_type: str) -> None:
        if Path(marker).exists():
            raise TransientStorageError(f"storage outage (test): {key} not written")
        write(self, key, data, content_type)

    LocalStorage.put = put  # type: ignore[method-assign]


def _empty_mask_for_the_no_subject_colour() -> None:
    """Wrap the model's last step: a photo all of NO_SUBJECT_COLOUR has no subject, one all
    of UNSURE_COLOUR an unsure mask in fast mode and a sure one in base mode, one all of
    LINGERING_COLOUR takes LINGER_S longer."""
    try:
        from worker.model import LoadedModel
    except ImportError:  # an API-only install: no model to wrap
        return
    finish = LoadedModel.finish

    def finished(self: LoadedModel, rgb: Any, logits: Any, full_size: Any = None) -> Any:
        rgba = finish(self, rgb, logits, full_size)
        if (rgb == NO_SUBJECT_COLOUR).all():
            rgba[..., 3] = 0
        elif (rgb == UNSURE_COLOUR).all():
            height, width = rgba.shape[:2]
            rgba[..., 3] = 255
            if self.mode == "fast":
                rgba[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4, 3] = 128
        elif (rgb == LINGERING_COLOUR).all():
            time.sleep(LINGER_S)
        return rgba

    LoadedModel.finish = finished  # type: ignore[method-assign]


class _LostDevice:
    """An engine whose device failed: each forward raises what torch raises for a CUDA
    error, anything else is the engine's."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def logits(self, batch: Any) -> Any:
        import torch

        raise torch.AcceleratorError("CUDA error: an illegal memory access was encountered")


def _fail_the_device_while_marked() -> None:
    """Wrap the model's forward with a device failure switch (below `saliency`, where the
    worker tells a failed device from other errors)."""
    marker = os.environ.get(DEVICE_FAULT_MARKER_ENV)
    if not marker:
        return
    try:
        from worker.model import LoadedModel
    except ImportError:  # an API-only install: no model to wrap
        return
    saliency = LoadedModel.saliency

    def on_the_device(self: LoadedModel, inputs: Any) -> Any:
        if not Path(marker).exists():
            return saliency(self, inputs)
        engine = self.engine
        self.engine = _LostDevice(engine)  # type: ignore[assignment]
        try:
            return saliency(self, inputs)
        finally:
            self.engine = engine

    LoadedModel.saliency = on_the_device  # type: ignore[method-assign]


_fail_writes_while_marked()
_fail_the_device_while_marked()
_empty_mask_for_the_no_subject_colour()
register(Effect("explode", "Always raises (test only).", explode))
register(Effect("slow", "Takes a few seconds (test only).", slow))
register(Effect("hang", "Never returns (test only).", hang))
register(Effect("crash_once", "Kills its worker once (test only).", crash_once))
