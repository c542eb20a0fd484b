"""Celery tasks: thin wrappers that give each step its process, time limits (our own in a
solo pool, whose Celery enforces none), retries and failures."""

from __future__ import annotations

import contextlib
import ctypes
import inspect
import logging
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

import redis
from celery import Task, current_app, shared_task
from celery.exceptions import Reject, SoftTimeLimitExceeded, TimeLimitExceeded
from kombu.exceptions import OperationalError

from shared.errors import CutfxError, DeliveryBusy, WebhookDeliveryFailed
from shared.jobs.model import CUTOUT
from shared.jobs.plan import enqueue_webhook_delivery
from shared.queues import (
    HARD_LIMIT_GRACE_S,
    TASK_APPLY_EFFECT,
    TASK_DELIVER_WEBHOOKS,
    TASK_SEGMENT,
)
from shared.telemetry import job_context
from worker.process import WorkerProcess, this_process
from worker.steps import fail_for_good, run_effect, run_segment
from worker.webhooks import deliver_pending

logger = logging.getLogger(__name__)

#: Worth retrying the task for: another worker held the cutout's lock past our wait.
#: (Storage calls are retried within CUTFX_STORAGE_RETRY_S where they happen.)
TRANSIENT_ERRORS = (redis.exceptions.LockError,)
#: Redis (job store and broker) away. A Celery retry would have to publish a new message
#: to the broker that is away, and Celery rejects, so loses, a task whose retry cannot be
#: sent: such a task goes back on its queue instead, or, when not even that reaches
#: Redis, comes back through its visibility once Redis is back.
OUTAGE_ERRORS = (redis.ConnectionError, redis.TimeoutError, OperationalError)
MAX_RETRIES = 3
RETRY_BACKOFF_MAX_S = 30
#: Ten retries (1, 2, 4 … capped at 300 s, jittered: up to ~14 min) before an event is given up.
WEBHOOK_MAX_RETRIES = 10
WEBHOOK_BACKOFF_MAX_S = 300
DELIVERY_BUSY_RETRY_S = 2
TIMEOUT_CODE = "timeout"


def failure_code(exc: BaseException) -> str:
    """The error code a result gets when its task fails for good with `exc`."""
    if isinstance(exc, (SoftTimeLimitExceeded, TimeLimitExceeded)):
        return TIMEOUT_CODE
    if isinstance(exc, CutfxError):
        return exc.code
    return "internal_error"


class JobTask(Task):  # type: ignore[misc]
    """Records a result as failed when its task fails for good, so no job hangs, and
    queues the webhook delivery of that failure (the step's frame queues none for a
    step that raised).

    The task's own parameters say which result it makes: `job_id`, and
    `effect_name` for an effect (the cutout otherwise).
    """

    autoretry_for = TRANSIENT_ERRORS
    max_retries = MAX_RETRIES
    retry_backoff = True
    retry_backoff_max = RETRY_BACKOFF_MAX_S
    acks_late = True
    reject_on_worker_lost = True

    def on_failure(
        self,
        exc: BaseException,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        einfo: Any,
    ) -> None:
        called_with = inspect.signature(self.run).bind(*args, **kwargs).arguments
        job_id = str(called_with["job_id"])
        result_name = str(called_with.get("effect_name", CUTOUT))
        code = failure_code(exc)
        with job_context(job_id):
            logger.error(
                "task failed",
                extra={"task": self.name, "result": result_name, "code": code},
                exc_info=exc,
            )
            try:
                fail_for_good(this_process(), job_id, result_name, code, type(exc).__name__)
            except Exception:
                logger.exception("could not record the failure")
            notify_webhook(job_id)


def notify_webhook(job_id: str) -> None:
    """Queue delivery of the job's new events, if it has a webhook (on its own queue)."""
    try:
        if this_process().context.jobs.webhook(job_id) is not None:
            enqueue_webhook_delivery(current_app, job_id)
    except (redis.RedisError, OperationalError):
        # The next step's notice, or the redelivered task's, queues it once Redis is back.
        logger.warning("could not queue webhook delivery")


@contextlib.contextmanager
def requeued_on_outage() -> Iterator[None]:
    """A task cut off by a Redis outage is handed back, never acknowledged as done."""
    try:
        yield
    except OUTAGE_ERRORS as exc:
        logger.warning("Redis unavailable: the task goes back", extra={"reason": repr(exc)})
        raise Reject(exc, requeue=True) from exc


@contextlib.contextmanager
def job_step(process: WorkerProcess, job_id: str, result_name: str, limit_s: int) -> Iterator[None]:
    """The frame of one step: the job's log context, its time limit (a timed-out result
    fails with `timeout` and the worker goes on), and its webhook notified once after.

    A step that raises is not notified here: it is retried, handed back (whose next
    run notifies), or failed for good by JobTask.on_failure, which notifies then; a
    notice here would come before the failure it should carry.
    """
    # Prefork pools enforce the annotated limits themselves; a solo worker needs ours.
    limited: contextlib.AbstractContextManager[None] = (
        contextlib.nullcontext() if process.forks else soft_time_limit(limit_s, HARD_LIMIT_GRACE_S)
    )
    with job_context(job_id), requeued_on_outage():
        try:
            with limited:
                yield
        except SoftTimeLimitExceeded:
            logger.error("step timed out", extra={"result": result_name, "limit_s": limit_s})
            message = f"took longer than {limit_s} s"
            fail_for_good(process, job_id, result_name, TIMEOUT_CODE, message)
        notify_webhook(job_id)


@shared_task(name=TASK_SEGMENT, base=JobTask, bind=True)
def segment(self: JobTask, job_id: str) -> None:
    process = this_process()
    with job_step(process, job_id, CUTOUT, process.context.settings.segment_time_limit_s):
        run_segment(process, job_id, current_app)


@shared_task(name=TASK_APPLY_EFFECT, base=JobTask, bind=True)
def apply_effect(self: JobTask, job_id: str, effect_name: str) -> None:
    process = this_process()
    with job_step(process, job_id, effect_name, process.context.settings.effect_time_limit_s):
        run_effect(process, job_id, effect_name)


@shared_task(
    name=TASK_DELIVER_WEBHOOKS,
    bind=True,
    acks_late=True,
    autoretry_for=(WebhookDeliveryFailed, *TRANSIENT_ERRORS),
    retry_backoff=True,
    retry_backoff_max=WEBHOOK_BACKOFF_MAX_S,
    retry_jitter=True,
    max_retries=WEBHOOK_MAX_RETRIES,
)
def deliver_webhooks(self: Task, job_id: str) -> int:
    with job_context(job_id), requeued_on_outage():
        try:
            return deliver_pending(this_process().context, job_id)
        except DeliveryBusy:
            # Another delivery holds the job's lock: no failure, look again shortly (its
            # events are sent by whichever delivery holds the lock next).
            raise self.retry(countdown=DELIVERY_BUSY_RETRY_S, max_retries=None) from None


# Time limits where the pool does not enforce them: the gpu worker's solo and threads pools.
#
# Celery's prefork pool (the cpu workers) applies the soft and hard limits of the
# task annotations itself. In a solo worker the task runs in the main thread, so
# the soft limit is a SIGALRM that raises SoftTimeLimitExceeded there; in a
# threads pool (a batching gpu worker) a timer raises it in the task's thread
# through CPython's asynchronous exception. Either way it lands between Python
# steps: a hung loop stops, a hung C call cannot. The hard limit is a watchdog
# that stops the process: its tasks are handed out again once their visibility
# lapses, and count as an attempt.

#: The exit status of a worker stopped by its hard time limit.
EXIT_HARD_TIME_LIMIT = 70


@contextlib.contextmanager
def soft_time_limit(seconds: float, hard_grace_s: float) -> Iterator[None]:
    """SoftTimeLimitExceeded after `seconds`; the process stops `hard_grace_s` later."""
    if threading.current_thread() is not threading.main_thread():
        with _thread_time_limit(seconds, hard_grace_s):
            yield
        return

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise SoftTimeLimitExceeded(f"soft time limit of {seconds:g} s exceeded")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        with _watchdog(seconds, hard_grace_s):
            yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def _thread_time_limit(seconds: float, hard_grace_s: float) -> Iterator[None]:
    thread_id = threading.get_ident()
    finished = threading.Event()
    guard = threading.Lock()

    def interrupt() -> None:
        with guard:
            if not finished.is_set():
                _raise_in_thread(thread_id, SoftTimeLimitExceeded)

    timer = threading.Timer(seconds, interrupt)
    timer.daemon = True
    timer.start()
    try:
        with _watchdog(seconds, hard_grace_s):
            yield
    finally:
        with guard:
            finished.set()
        timer.cancel()


def _raise_in_thread(thread_id: int, exception: type[BaseException]) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exception)
    )


@contextlib.contextmanager
def _watchdog(seconds: float, hard_grace_s: float) -> Iterator[None]:
    watchdog = threading.Timer(seconds + hard_grace_s, _stop_process, args=(seconds,))
    watchdog.daemon = True
    watchdog.start()
    try:
        yield
    finally:
        watchdog.cancel()


def _stop_process(seconds: float) -> None:
    logger.critical(
        "hard time limit exceeded: stopping the process; its task will be handed out again",
        extra={"soft_limit_s": seconds},
    )
    os._exit(EXIT_HARD_TIME_LIMIT)
