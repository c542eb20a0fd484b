"""Queue and task names and the Celery settings shared by the API (producer) and workers."""

from __future__ import annotations

from typing import Any

from shared.redis_location import celery_broker
from shared.settings import WORKER_QUEUES, Settings

QUEUE_GPU, QUEUE_CPU, QUEUE_WEBHOOKS = WORKER_QUEUES
TASK_SEGMENT = "cutfx.segment"
TASK_APPLY_EFFECT = "cutfx.apply_effect"
TASK_DELIVER_WEBHOOKS = "cutfx.deliver_webhooks"
#: A task message's header: when it was queued (Unix seconds), for the queue-wait span
#: and the oldest waiting task's age on /metrics.
QUEUED_AT_HEADER = "cutfx_queued_at"

#: The broker's unacked index (kombu's default name), whose scores the workers
#: refresh for the tasks they are running.
UNACKED_INDEX_KEY = "unacked_index"
#: How often any worker sweeps the unacked index for messages whose worker died.
UNACKED_RESTORE_INTERVAL_S = 5
#: Redis priority levels; Celery's Redis transport uses one list per step.
PRIORITY_STEPS = [0, 3, 6, 9]
PRIORITY_PRIMARY = 0
PRIORITY_OTHER = 6
#: The batch lane's tasks: after every interactive one (a worker takes the lists in
#: priority order), until they have waited CUTFX_BATCH_MAX_WAIT_S (worker/periodic.py).
PRIORITY_BATCH = 9
#: Fair share within the interactive lane: a key's cutout waits in a list by how many
#: unfinished jobs the key has (its rank): its first in the top one, its second below,
#: the rest of a burst below that. Another key's first photo goes ahead of a burst.
PRIORITY_BY_RANK = (PRIORITY_PRIMARY, 3, PRIORITY_OTHER)


#: Past its soft limit a task is told (and fails its result as `timeout`); this much
#: later its process is stopped.
HARD_LIMIT_GRACE_S = 15
#: The sweep's own lock. Kombu's default (300 s) outlives a sweeper cut off by a Redis
#: restart or failover (the lock is persisted, or replicated), and would hold every
#: dead worker's task back for five minutes; a sweep takes milliseconds.
UNACKED_MUTEX_EXPIRE_S = 10
#: A broker that does not answer within this is gone: reconnect rather than hang.
BROKER_SOCKET_TIMEOUT_S = 15


def celery_config(settings: Settings) -> dict[str, Any]:
    broker_url, sentinel_options = celery_broker(settings.redis_url)
    return {
        "broker_url": broker_url,
        "broker_connection_retry_on_startup": True,
        # A message whose worker stops refreshing it (worker/consumer.py) is handed
        # out again visibility_timeout_s later, found by a sweep every few seconds.
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout_s,
            "unacked_index_key": UNACKED_INDEX_KEY,
            "unacked_restore_interval": UNACKED_RESTORE_INTERVAL_S,
            "unacked_restore_throttle": 1,
            "unacked_mutex_expire": UNACKED_MUTEX_EXPIRE_S,
            "priority_steps": PRIORITY_STEPS,
            "sep": ":",
            "queue_order_strategy": "priority",
            "socket_timeout": BROKER_SOCKET_TIMEOUT_S,
            "socket_connect_timeout": BROKER_SOCKET_TIMEOUT_S,
            **sentinel_options,
        },
        "broker_connection_retry": True,
        "broker_connection_max_retries": None,
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
        "task_annotations": {
            TASK_SEGMENT: {
                "soft_time_limit": settings.segment_time_limit_s,
                "time_limit": settings.segment_time_limit_s + HARD_LIMIT_GRACE_S,
            },
            TASK_APPLY_EFFECT: {
                "soft_time_limit": settings.effect_time_limit_s,
                "time_limit": settings.effect_time_limit_s + HARD_LIMIT_GRACE_S,
            },
        },
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
    }
