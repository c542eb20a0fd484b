"""A daemon thread that does one thing every so often, and survives Redis and storage outages."""

from __future__ import annotations

import logging
import threading

import redis

logger = logging.getLogger(__name__)


class Periodic:
    """Calls `tick()` every `interval_s` until stopped; a failed tick is logged, not fatal."""

    name = "periodic"

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"cutfx-{self.name}", daemon=True)

    def tick(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.tick()
            except (redis.RedisError, OSError) as exc:
                logger.warning(f"{self.name} failed", extra={"reason": str(exc)})
