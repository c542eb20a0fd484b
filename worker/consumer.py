"""The worker and its broker messages: Celery's consumer and its tasks' acknowledgements,
kept alive through a broker outage, and the visibility of the messages whose tasks are
running, kept fresh.

When the broker connection drops while a task's acknowledgement or rejection could
not reach Redis, that message is still in the channel's delivered set. Celery then
collects the connection and closes it; closing the channel tries to hand the message
back through a client that collect() has already released, and raises AttributeError,
which Celery counts as unrecoverable: the worker exits and its queue stops until
something restarts it. Seen in tests/worker/test_faults.py's Redis restart.

Here that close is allowed to fail: the message stays in the broker's unacked index
and comes back through the visibility sweep (VisibilityKeeper, below), and the consumer
reconnects as it does after any other connection error.

The same released client fails a task's acknowledgement or rejection that comes after
the connection was lost: a prefork pool hands a task's end back to the worker's main
process, sometimes only once the consumer has reconnected, and the main process then
answers on the lost connection's channel. Celery counts that AttributeError as
unrecoverable too; seen in the same test, where a `cpu` worker exited and every job's
colour stayed pending. OutageProofRequest lets such a message go to the visibility
sweep instead: its task runs again, and finds its result finished or runs it anew.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis
from celery.worker.consumer import Consumer
from celery.worker.request import Request

from shared.queues import UNACKED_INDEX_KEY
from worker.periodic import Periodic

logger = logging.getLogger(__name__)

#: For Celery's worker_consumer setting.
CONSUMER_CLASS = "worker.consumer:OutageProofConsumer"
#: For the tasks' Request attribute.
REQUEST_CLASS = "worker.consumer:OutageProofRequest"


class OutageProofConsumer(Consumer):  # type: ignore[misc]
    def on_connection_error_after_connected(self, exc: Any) -> None:
        try:
            super().on_connection_error_after_connected(exc)
        except AttributeError as close_error:
            self.connection = None
            logger.warning(
                "the lost broker connection could not hand its unacknowledged messages "
                "back; they return through the visibility sweep",
                extra={"reason": repr(close_error), "connection_error": repr(exc)},
            )


class OutageProofRequest(Request):  # type: ignore[misc]
    """A task's request that neither acknowledges nor rejects its message on a channel
    whose broker connection was lost since delivery (see the module's doc)."""

    def acknowledge(self) -> None:
        if not self.acknowledged and self._channel_lost():
            self._leave_to_the_sweep("acknowledge")
            return
        super().acknowledge()

    def reject(self, requeue: bool = False) -> None:
        if not self.acknowledged and self._channel_lost():
            self._leave_to_the_sweep("reject")
            return
        super().reject(requeue)

    def _channel_lost(self) -> bool:
        channel = self._message.channel
        if channel is None or getattr(channel, "closed", False):
            return True
        # kombu's virtual transports drop their client when the connection is collected.
        transport = getattr(channel, "connection", None)
        return transport is None or getattr(transport, "client", transport) is None

    def _leave_to_the_sweep(self, answer: str) -> None:
        self.acknowledged = True
        logger.warning(
            "the task's broker connection was lost since delivery: its message comes back "
            "through the visibility sweep",
            extra={"task_id": self.id, "task": self.name, "answer": answer},
        )


# Keeping running tasks' broker messages invisible while their worker lives.
#
# Celery on Redis hands an unacknowledged message out again once it has been
# invisible for the visibility timeout. A long timeout strands the job of a dead
# worker for that long; a short one would hand a slow but healthy task to a
# second worker. So the timeout is short (CUTFX_VISIBILITY_TIMEOUT_S, 30 s), and
# each worker process refreshes the delivery time of the messages it is running,
# as SQS's ChangeMessageVisibility does: a worker that dies stops refreshing, and
# its message is handed out again within the timeout plus one sweep (5 s).


def delivery_tag_of(task: Any) -> str | None:
    """The broker's tag of the message `task` runs from. Celery leaves it out of the
    request's `delivery_info` (exchange, routing key, priority, redelivered); kombu's
    Redis transport puts it in the message's properties, which the request keeps."""
    properties = getattr(getattr(task, "request", None), "properties", None) or {}
    tag = properties.get("delivery_tag")
    return str(tag) if tag is not None else None


class VisibilityKeeper(Periodic):
    """Refreshes, every `interval_s`, the unacked-index score of each running task. Its
    thread starts with the first task this process holds."""

    name = "visibility refresh"

    def __init__(self, client: redis.Redis, interval_s: float) -> None:
        super().__init__(interval_s)
        self.client = client
        self._tags: set[str] = set()
        self._lock = threading.Lock()

    def hold(self, delivery_tag: str) -> None:
        with self._lock:
            self._tags.add(delivery_tag)
            if not self.started:
                self.start()

    def release(self, delivery_tag: str) -> None:
        with self._lock:
            self._tags.discard(delivery_tag)

    def tick(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        with self._lock:
            tags = list(self._tags)
        if not tags:
            return
        now = time.time()
        try:
            # XX: only messages still unacknowledged; an acked one stays gone.
            self.client.zadd(UNACKED_INDEX_KEY, dict.fromkeys(tags, now), xx=True)
        except redis.RedisError as exc:
            logger.warning("could not refresh task visibility", extra={"reason": str(exc)})
