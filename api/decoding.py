"""Upload decoding off the event loop, a bounded number at a time per API process.

The API serves requests and event streams on gevent: one CPU-bound decode run
on the loop freezes every other request of the process. Decoding therefore runs
on gevent's pool of real threads (Pillow releases the GIL while it decodes),
and at most `limit` at once. A submit waits up to SLOT_WAIT_S for a slot (its
greenlet waits; the loop does not), then is a 503 with Retry-After.
Outside gevent (tests, the development server) it runs in the calling thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from shared.errors import ServiceBusy

#: How soon a client turned away by a full decode pool should try again.
BUSY_RETRY_AFTER_S = 2
#: How long a submit waits for a decode slot before it is turned away.
SLOT_WAIT_S = 10.0

P = ParamSpec("P")
T = TypeVar("T")


def _gevent_patched() -> bool:
    try:
        from gevent import monkey
    except ImportError:
        return False
    return bool(monkey.is_module_patched("socket"))


class DecodePool:
    def __init__(self, limit: int, slot_wait_s: float = SLOT_WAIT_S) -> None:
        self.limit = limit
        self.slot_wait_s = slot_wait_s
        self._slots = threading.BoundedSemaphore(limit)

    def run(self, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if not self._slots.acquire(timeout=self.slot_wait_s):
            raise ServiceBusy(
                f"this server is decoding {self.limit} uploads already; retry shortly",
                retry_after_s=BUSY_RETRY_AFTER_S,
            )
        try:
            if _gevent_patched():
                import gevent

                return gevent.get_hub().threadpool.apply(work, args, kwargs)  # type: ignore[no-any-return]
            return work(*args, **kwargs)
        finally:
            self._slots.release()
