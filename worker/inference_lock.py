"""One inference per cutout at a time across workers: a Redis lock per cutout key.

The lock lives as long as a task's visibility (CUTFX_VISIBILITY_TIMEOUT_S, 30 s), so a
dead holder's lock is gone by the time its task is handed out again. A live holder
renews it while its inference runs, as the worker keeps a running task's message from
being handed out again (worker/consumer.py): a base-mode forward on a 2-core CPU takes
12 to 80 s, and without renewal the lock lapsed under it (the suite's escalation test
logged so), and a second job with the same photo ran the same inference beside it. A
lock lost all the same (Redis restarted without it, a renewal that could not reach Redis
in time) is no failure of the inference: its work is stored, and at worst another worker
did it too.

redis-py's own `Lock` does the locking; its `reacquire` (owner-checked, atomic) renews.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.exceptions import LockError, LockNotOwnedError

from worker.periodic import Periodic

logger = logging.getLogger(__name__)

#: Renewals in each time to live: two may fail (a Redis hiccup) before the lock lapses.
RENEWALS_PER_TIMEOUT = 3
KEY_PREFIX = "cutfx:lock:"


@contextmanager
def inference_lock(
    client: redis.Redis, cutout_key: str, timeout_s: float, wait_s: float
) -> Iterator[None]:
    """Hold the lock of `cutout_key` for the block, renewed every third of `timeout_s`;
    LockError when another holder keeps it past `wait_s`."""
    # Not thread-local: the renewing thread presents the token the block's thread took.
    lock = client.lock(
        KEY_PREFIX + cutout_key, timeout=timeout_s, blocking_timeout=wait_s, thread_local=False
    )
    if not lock.acquire():
        raise LockError("the inference lock was not free within the blocking time")
    renewal = LockRenewal(lock, timeout_s / RENEWALS_PER_TIMEOUT)
    renewal.start()
    try:
        yield
    finally:
        # Joined before the release, so that no renewal comes after it.
        renewal.stop()
        renewal.join()
        try:
            lock.release()
        except LockNotOwnedError:
            logger.warning("the inference lock lapsed before the cutout was stored")


class LockRenewal(Periodic):
    """Renews `lock` every `every_s` until stopped, or until the lock is found lost (a
    failed renewal is logged and tried again at the next tick)."""

    name = "inference lock renewal"

    def __init__(self, lock: redis.lock.Lock, every_s: float) -> None:
        super().__init__(every_s)
        self.lock = lock

    def tick(self) -> None:
        try:
            self.lock.reacquire()
        except LockNotOwnedError:
            logger.warning("the inference lock was lost: another worker may run this inference")
            self.stop()
