"""A daemon thread that tells Redis, every few seconds, that this worker is alive and ready."""

from __future__ import annotations

import logging
import os
import threading
import time

import redis

from shared.workers import HEARTBEAT_INTERVAL_S, WorkerStatus, publish, withdraw

logger = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self, client: redis.Redis, status: WorkerStatus) -> None:
        self.client = client
        self.status = status
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cutfx-heartbeat", daemon=True)

    def start(self) -> None:
        self._beat()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        try:
            withdraw(self.client, self.status.name)
        except redis.RedisError:
            logger.warning("could not withdraw the heartbeat")

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_INTERVAL_S):
            self._beat()

    def _beat(self) -> None:
        try:
            publish(self.client, self.status)
        except redis.RedisError as exc:
            logger.warning("heartbeat failed", extra={"reason": str(exc)})


def new_status(
    name: str, queues: tuple[str, ...], started_at: float, **model: object
) -> WorkerStatus:
    return WorkerStatus(
        name=name,
        queues=queues,
        ready=True,
        pid=os.getpid(),
        started_at=started_at,
        ready_after_s=round(time.time() - started_at, 3),
        **model,  # type: ignore[arg-type]
    )
