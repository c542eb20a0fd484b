"""The worker's periodic chores, each a daemon thread that survives Redis and storage
outages: the heartbeat that says the worker is ready, the sweep that cancels jobs past
their Cancel-After deadline, the garbage collection of expired local objects, and the
aging that keeps the batch lane from starving."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

import redis

from shared.context import ServiceContext
from shared.jobs.model import now
from shared.jobs.store import JobStore
from shared.queues import PRIORITY_STEPS, QUEUE_CPU, QUEUE_GPU, QUEUED_AT_HEADER
from shared.storage import LocalStorage
from shared.telemetry import job_context
from shared.workers import HEARTBEAT_INTERVAL_S, WorkerStatus, publish, withdraw

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

    @property
    def started(self) -> bool:
        return self._thread.ident is not None

    def join(self, timeout_s: float | None = None) -> None:
        """Wait for a tick under way to end (after stop()), at most `timeout_s`."""
        if self.started:
            self._thread.join(timeout_s)

    def tick_logging_failure(self) -> None:
        try:
            self.tick()
        except (redis.RedisError, OSError) as exc:
            logger.warning(f"{self.name} failed", extra={"reason": str(exc)})

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.tick_logging_failure()


#: How long a stopping worker waits for a heartbeat under way (a SET: milliseconds, unless
#: Redis hangs) before it withdraws its entry.
HEARTBEAT_STOP_WAIT_S = 2.0


class Heartbeat(Periodic):
    """Tells Redis, every few seconds, that this worker is alive and ready; the first
    beat is sent on start, and the worker's entry withdrawn on stop."""

    name = "heartbeat"

    def __init__(self, client: redis.Redis, status: WorkerStatus) -> None:
        super().__init__(HEARTBEAT_INTERVAL_S)
        self.client = client
        self.status = status

    def start(self) -> None:
        self.tick_logging_failure()
        super().start()

    def stop(self) -> None:
        super().stop()
        # A beat under way would publish the entry again after its withdrawal, and a
        # stopped worker would count as ready until the entry expired.
        self.join(HEARTBEAT_STOP_WAIT_S)
        try:
            withdraw(self.client, self.status.name)
        except redis.RedisError:
            logger.warning("could not withdraw the heartbeat")

    def tick(self) -> None:
        publish(self.client, self.status)


def new_status(
    name: str, queues: tuple[str, ...], started_at: float, **model: object
) -> WorkerStatus:
    """A ready worker's status; one that serves no queue yet (a prefork pool's main
    process serving the gpu queue alone, until its pool processes announce it) is alive
    but not ready."""
    return WorkerStatus(
        name=name,
        queues=queues,
        ready=bool(queues),
        pid=os.getpid(),
        started_at=started_at,
        ready_after_s=round(time.time() - started_at, 3),
        **model,  # type: ignore[arg-type]
    )


# Cancel-After: the unfinished work of a job past its deadline is canceled.
#
# Every worker process sweeps the deadline list each second; whoever takes a job
# off it (ZREM answers 1 to one caller only) cancels it. A task that comes up
# for a job past its deadline cancels it too, so a late sweep costs no work.

DEADLINE_SWEEP_INTERVAL_S = 1.0
#: Jobs canceled per sweep at most; the rest wait a second.
DEADLINE_SWEEP_BATCH = 100
DEADLINE_MESSAGE = "canceled: the job's Cancel-After deadline passed"

Canceled = Callable[[str], None]


def cancel_past_deadline(jobs: JobStore, job_id: str) -> bool:
    """Cancel the job's unfinished work; True when this call canceled something."""
    canceled = jobs.cancel(job_id, DEADLINE_MESSAGE)
    if canceled:
        with job_context(job_id):
            logger.info("job canceled at its deadline")
    return canceled


def cancel_overdue(jobs: JobStore, on_canceled: Canceled, at: float | None = None) -> int:
    """Cancel the jobs whose deadline has passed; the number canceled."""
    count = 0
    for job_id in jobs.past_deadline(now() if at is None else at, DEADLINE_SWEEP_BATCH):
        if jobs.claim_deadline(job_id) and cancel_past_deadline(jobs, job_id):
            on_canceled(job_id)
            count += 1
    return count


class DeadlineSweeper(Periodic):
    name = "deadline sweep"

    def __init__(self, jobs: JobStore, on_canceled: Canceled) -> None:
        super().__init__(DEADLINE_SWEEP_INTERVAL_S)
        self.jobs = jobs
        self.on_canceled = on_canceled

    def tick(self) -> None:
        cancel_overdue(self.jobs, self.on_canceled)


# Retention: local storage keeps objects only as long as the job records that name them.
#
# A cpu worker runs the sweep every CUTFX_GC_INTERVAL_S (one worker at a time, by
# a Redis lock); `cutfx gc` runs it by hand. Objects older than
# CUTFX_RESULT_TTL_S go: the cache index entries naming them expire at the same
# age, and a lookup that finds an entry without its object drops it, so nothing
# served ever points at a deleted object. GCS buckets use a lifecycle rule
# instead (`cutfx gcs-lifecycle`).

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


# Lanes and fair share: a batch job's tasks wait in each queue's lowest priority list, a
# key's burst in the lists below the top one (shared/queues.py), which a worker reads only
# when the lists above are empty. So that a steady stream of others never starves them,
# a task that has waited CUTFX_BATCH_MAX_WAIT_S in a lower list moves to the front of
# the top one (one worker a tick, by a Redis lock).

LANE_AGING_INTERVAL_S = 2
LANE_AGING_LOCK_KEY = "cutfx:lanes:aging"
#: At most this many tasks move a tick: a backlog moves over a few ticks, not at once.
MAX_PROMOTED_PER_TICK = 50

# KEYS: the lower list, the top one. ARGV: now, the longest wait, the header.
# Kombu pushes on the left and pops on the right: the oldest is the last item, and the
# next served the interactive list's last. Atomic, so a worker that pops meanwhile takes
# either the moved task or the one behind it, never both or neither.
_PROMOTE_AGED = """
local raw = redis.call('LINDEX', KEYS[1], -1)
if not raw then return 0 end
local ok, message = pcall(cjson.decode, raw)
if not ok or type(message.headers) ~= 'table' then return 0 end
local queued_at = tonumber(message.headers[ARGV[3]])
if not queued_at or tonumber(ARGV[1]) - queued_at < tonumber(ARGV[2]) then return 0 end
redis.call('RPOP', KEYS[1])
redis.call('RPUSH', KEYS[2], raw)
return 1
"""


def promote_aged(broker: redis.Redis, max_wait_s: float, at: float | None = None) -> int:
    """Move tasks of the lower priority lists that waited `max_wait_s` to the front of
    their queue."""
    promote = broker.register_script(_PROMOTE_AGED)
    arguments: list[float | str] = [time.time() if at is None else at, max_wait_s, QUEUED_AT_HEADER]
    moved = 0
    for queue in (QUEUE_GPU, QUEUE_CPU):
        for step in PRIORITY_STEPS[1:]:
            lists = [f"{queue}:{step}", queue]
            while moved < MAX_PROMOTED_PER_TICK and promote(keys=lists, args=arguments):
                moved += 1
    if moved:
        logger.info("waiting tasks moved ahead", extra={"moved": moved})
    return moved


class LaneAging(Periodic):
    """Moves aged tasks ahead on the broker; `store` (the job store's Redis, where the
    other chores' locks are) holds the lock that lets one worker do it a tick."""

    name = "lane aging"

    def __init__(self, broker: redis.Redis, store: redis.Redis, max_wait_s: float) -> None:
        super().__init__(LANE_AGING_INTERVAL_S)
        self.broker = broker
        self.store = store
        self.max_wait_s = max_wait_s

    def tick(self) -> None:
        if self.store.set(LANE_AGING_LOCK_KEY, "1", nx=True, ex=LANE_AGING_INTERVAL_S):
            promote_aged(self.broker, self.max_wait_s)
