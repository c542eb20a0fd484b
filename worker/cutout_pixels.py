"""Decoded cutouts (and photos behind blurred backgrounds) kept in memory: the effects of one
job usually meet in one worker process."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

Pixels = npt.NDArray[np.uint8]
#: Decoded cutouts kept per process; a 2048² RGBA cutout is 16 MB.
CUTOUT_CACHE_SIZE = 4


class CutoutPixels:
    """A small least-recently-used map from a cutout's storage key to its decoded pixels."""

    def __init__(self, size: int = CUTOUT_CACHE_SIZE) -> None:
        self.size = size
        self._pixels: OrderedDict[str, Pixels] = OrderedDict()
        # A batching gpu worker's task threads share it.
        self._lock = threading.Lock()

    def get(self, key: str, load: Callable[[str], Pixels]) -> Pixels:
        """The pixels of `key`, loaded (and remembered) on a miss."""
        with self._lock:
            if key in self._pixels:
                self._pixels.move_to_end(key)
                return self._pixels[key]
        pixels = load(key)
        self.remember(key, pixels)
        return pixels

    def remember(self, key: str, pixels: Pixels) -> None:
        with self._lock:
            self._pixels[key] = pixels
            self._pixels.move_to_end(key)
            while len(self._pixels) > self.size:
                self._pixels.popitem(last=False)
