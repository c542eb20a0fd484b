"""Queue and task names and the Celery settings shared by the API (producer) and workers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import Celery

from shared.settings import Settings

QUEUE_GPU = "gpu"
QUEUE_CPU = "cpu"
QUEUE_WEBHOOKS = "webhooks"
TASK_SEGMENT = "cutfx.segment"
TASK_APPLY_EFFECT = "cutfx.apply_effect"
TASK_DELIVER_WEBHOOKS = "cutfx.deliver_webhooks"

#: Longer than the longest task (a base-mode inference on CPU is ~15 s), or Redis
#: would hand a still-running task to a second worker.
VISIBILITY_TIMEOUT_S = 3600
#: Redis priority levels; Celery's Redis transport uses one list per step.
PRIORITY_STEPS = [0, 3, 6, 9]
PRIORITY_PRIMARY = 0
PRIORITY_OTHER = 6


def celery_config(settings: Settings) -> dict[str, Any]:
    return {
        "broker_url": settings.redis_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": VISIBILITY_TIMEOUT_S,
            "priority_steps": PRIORITY_STEPS,
            "sep": ":",
            "queue_order_strategy": "priority",
        },
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": QUEUE_CPU,
        "task_routes": {
            TASK_SEGMENT: {"queue": QUEUE_GPU},
            TASK_APPLY_EFFECT: {"queue": QUEUE_CPU},
            TASK_DELIVER_WEBHOOKS: {"queue": QUEUE_WEBHOOKS},
        },
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
    }


def enqueue_segment(celery: Celery, job_id: str) -> None:
    celery.send_task(TASK_SEGMENT, args=[job_id], queue=QUEUE_GPU, priority=PRIORITY_PRIMARY)


def enqueue_effects(
    celery: Celery, job_id: str, effect_names: Sequence[str], primary: str | None
) -> None:
    """Queue effects in order; the primary one jumps ahead of other jobs' effects."""
    for name in effect_names:
        priority = PRIORITY_PRIMARY if name == primary else PRIORITY_OTHER
        celery.send_task(TASK_APPLY_EFFECT, args=[job_id, name], queue=QUEUE_CPU, priority=priority)


def enqueue_webhook_delivery(celery: Celery, job_id: str) -> None:
    """Deliver whatever events of the job its webhook has not received yet."""
    celery.send_task(TASK_DELIVER_WEBHOOKS, args=[job_id], queue=QUEUE_WEBHOOKS)
