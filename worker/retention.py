"""Retention: local storage keeps objects only as long as the job records that name them.

A cpu worker runs the sweep every CUTFX_GC_INTERVAL_S (one worker at a time, by
a Redis lock); `cutfx gc` runs it by hand. Objects older than
CUTFX_RESULT_TTL_S go: the cache index entries naming them expire at the same
age, and a lookup that finds an entry without its object drops it, so nothing
served ever points at a deleted object. GCS buckets use a lifecycle rule
instead (`cutfx gcs-lifecycle`).
"""

from __future__ import annotations

import logging

from shared.context import ServiceContext
from shared.storage.local import LocalStorage
from worker.periodic import Periodic

logger = logging.getLogger(__name__)

GC_LOCK_KEY = "cutfx:gc:lock"


def collect_garbage(ctx: ServiceContext) -> int | None:
    """Delete expired local objects; None when the backend is not local storage."""
    storage = ctx.storage.unwrapped()
    if not isinstance(storage, LocalStorage):
        return None
    deleted = storage.delete_older_than(ctx.settings.result_ttl_s)
    logger.info("storage swept", extra={"deleted": deleted, "max_age_s": ctx.settings.result_ttl_s})
    return deleted


class GarbageCollector(Periodic):
    """Sweeps every `interval_s`, when no other worker has just done so."""

    name = "storage sweep"

    def __init__(self, ctx: ServiceContext, interval_s: float) -> None:
        super().__init__(interval_s)
        self.ctx = ctx

    def tick(self) -> None:
        if self.ctx.redis.set(GC_LOCK_KEY, "1", nx=True, ex=int(self.interval_s)):
            collect_garbage(self.ctx)
