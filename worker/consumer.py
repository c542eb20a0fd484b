"""The worker's broker consumer: Celery's, kept alive through a broker outage.

When the broker connection drops while a task's acknowledgement or rejection could
not reach Redis, that message is still in the channel's delivered set. Celery then
collects the connection and closes it; closing the channel tries to hand the message
back through a client that collect() has already released, and raises AttributeError,
which Celery counts as unrecoverable: the worker exits and its queue stops until
something restarts it. Seen in tests/worker/test_faults.py's Redis restart.

Here that close is allowed to fail: the message stays in the broker's unacked index
and comes back through the visibility sweep (worker/visibility.py), and the consumer
reconnects as it does after any other connection error.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer

logger = logging.getLogger(__name__)

#: For Celery's worker_consumer setting.
CONSUMER_CLASS = "worker.consumer:OutageProofConsumer"


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
