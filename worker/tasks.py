"""Celery tasks: thin wrappers that give each step its process, retries and failure record."""

from __future__ import annotations

import inspect
import logging
from typing import Any

import redis
from celery import Task, current_app, shared_task

from shared.errors import TransientStorageError
from shared.jobs.model import CUTOUT
from shared.logging import job_context
from shared.queues import (
    TASK_APPLY_EFFECT,
    TASK_DELIVER_WEBHOOKS,
    TASK_SEGMENT,
    enqueue_webhook_delivery,
)
from worker.process import this_process
from worker.steps import fail_result, run_effect, run_segment
from worker.webhooks import DeliveryBusy, WebhookDeliveryFailed, deliver_pending

logger = logging.getLogger(__name__)

#: Worth retrying: the store or Redis was briefly away.
TRANSIENT_ERRORS = (
    TransientStorageError,
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.LockError,  # another worker held the cutout's lock past our wait
)
MAX_RETRIES = 3
RETRY_BACKOFF_MAX_S = 30
#: Ten retries (1, 2, 4 … capped at 300 s, jittered: up to ~14 min) before an event is given up.
WEBHOOK_MAX_RETRIES = 10
WEBHOOK_BACKOFF_MAX_S = 300


class JobTask(Task):  # type: ignore[misc]
    """Records a result as failed when its task fails for good, so no job hangs.

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
        with job_context(job_id):
            logger.error(
                "task failed", extra={"task": self.name, "result": result_name}, exc_info=exc
            )
            try:
                fail_result(
                    this_process(), job_id, result_name, "internal_error", type(exc).__name__
                )
            except Exception:
                logger.exception("could not record the failure")
            notify_webhook(job_id)


def notify_webhook(job_id: str) -> None:
    """Queue delivery of the job's new events, if it has a webhook (on its own queue)."""
    try:
        if this_process().context.jobs.webhook(job_id) is not None:
            enqueue_webhook_delivery(current_app, job_id)
    except redis.RedisError:
        logger.warning("could not queue webhook delivery")


@shared_task(name=TASK_SEGMENT, base=JobTask, bind=True)
def segment(self: JobTask, job_id: str) -> None:
    with job_context(job_id):
        try:
            run_segment(this_process(), job_id, current_app)
        finally:
            notify_webhook(job_id)


@shared_task(name=TASK_APPLY_EFFECT, base=JobTask, bind=True)
def apply_effect(self: JobTask, job_id: str, effect_name: str) -> None:
    with job_context(job_id):
        try:
            run_effect(this_process(), job_id, effect_name)
        finally:
            notify_webhook(job_id)


@shared_task(
    name=TASK_DELIVER_WEBHOOKS,
    bind=True,
    acks_late=True,
    autoretry_for=(WebhookDeliveryFailed, DeliveryBusy, *TRANSIENT_ERRORS),
    retry_backoff=True,
    retry_backoff_max=WEBHOOK_BACKOFF_MAX_S,
    retry_jitter=True,
    max_retries=WEBHOOK_MAX_RETRIES,
)
def deliver_webhooks(self: Task, job_id: str) -> int:
    with job_context(job_id):
        return deliver_pending(this_process().context, job_id)
