"""What a task does when Redis goes away under it: it is handed back, never lost."""

from __future__ import annotations

import pytest
import redis
from celery.exceptions import Reject
from kombu.exceptions import OperationalError

from worker.tasks import failure_code, requeued_on_outage


@pytest.mark.parametrize(
    "outage",
    [
        redis.ConnectionError("Error 111 connecting"),
        redis.TimeoutError("Timeout reading from socket"),
        OperationalError("'NoneType' object has no attribute 'client'"),
    ],
)
def test_a_task_cut_off_by_a_redis_outage_goes_back_on_its_queue(outage):
    """A Celery retry would publish to the broker that is away; Celery then rejects the
    task without requeueing it (lost). The task is handed back instead."""
    with pytest.raises(Reject) as caught, requeued_on_outage():
        raise outage
    assert caught.value.requeue is True


def test_other_errors_are_left_to_the_failure_record():
    with pytest.raises(ValueError, match="a bug"), requeued_on_outage():
        raise ValueError("a bug")


def test_failure_codes_name_what_happened():
    from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

    from shared.errors import TransientStorageError

    assert failure_code(SoftTimeLimitExceeded()) == "timeout"
    assert failure_code(TimeLimitExceeded(5)) == "timeout"
    assert failure_code(TransientStorageError("away")) == "storage_unavailable"
    assert failure_code(KeyError("x")) == "internal_error"
