"""What a task does when Redis goes away under it: it is handed back, never lost."""

from __future__ import annotations

import pytest
import redis
from celery.exceptions import Reject
from kombu.exceptions import OperationalError

from shared.telemetry import FIRST_RESULT_SECONDS, RESULTS_FAILED
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


def _job_with_webhook(jobs, effects=("color",)):
    from shared.jobs import EventType, JobRequest, Webhook, new_job_id
    from shared.output import OutputFormat

    job_id = new_job_id()
    request = JobRequest(
        input_sha256="ab" * 32,
        input_key="inputs/ab/x.png",
        width=10,
        height=8,
        effects=effects,
        primary=effects[0],
        output=OutputFormat(),
        params={name: {} for name in effects},
    )
    jobs.create(job_id, request, Webhook("http://127.0.0.1:9/hook", tuple(EventType)))
    return job_id


@pytest.fixture
def process_on_unit_redis(settings, monkeypatch):
    """This process as a worker on the unit Redis, with webhook deliveries recorded, each
    with the job's events as they stood when it was queued."""
    import worker.tasks
    from shared.context import connect_context
    from shared.jobs.store import read_events
    from worker.process import WorkerProcess

    process = WorkerProcess(forks=True)
    process._context = connect_context(settings, "worker", decode_responses=True)
    queued: list[tuple[str, list[str]]] = []

    def record_delivery(celery, job_id):
        events = read_events(process.context.redis, job_id, "0-0", None)
        queued.append((job_id, [event.type for event in events]))

    monkeypatch.setattr(worker.tasks, "this_process", lambda: process)
    monkeypatch.setattr(worker.tasks, "enqueue_webhook_delivery", record_delivery)
    return process, queued


def test_a_task_that_fails_for_good_queues_one_delivery_after_its_failure(
    process_on_unit_redis,
):
    """The step's frame queues nothing for a step that raised; the failure record does,
    once, with the failure's event already there to deliver."""
    from worker.tasks import apply_effect, job_step

    process, queued = process_on_unit_redis
    jobs = process.context.jobs
    job_id = _job_with_webhook(jobs)
    jobs.start_result(job_id, jobs.get(job_id).results["color"])
    with pytest.raises(ValueError, match="boom"), job_step(process, job_id, "color", 60):
        raise ValueError("boom")
    assert queued == [], "nothing queued before the failure is recorded"
    apply_effect.on_failure(ValueError("boom"), "task-1", (job_id, "color"), {}, None)
    assert len(queued) == 1, "one delivery for the failure"
    assert queued[0][1][-1] == "result.failed"
    color = jobs.get(job_id).results["color"]
    assert color.status == "failed"
    assert color.error == {"code": "internal_error", "message": "ValueError"}


def test_a_timed_out_step_fails_once_and_queues_one_delivery(process_on_unit_redis):
    from celery.exceptions import SoftTimeLimitExceeded

    from worker.tasks import job_step

    process, queued = process_on_unit_redis
    jobs = process.context.jobs
    job_id = _job_with_webhook(jobs, effects=("color", "popart"))
    with job_step(process, job_id, "cutout", 60):
        raise SoftTimeLimitExceeded()
    assert len(queued) == 1
    job = jobs.get(job_id)
    assert job.results["cutout"].error["code"] == "timeout"
    assert {job.results[name].error["code"] for name in ("color", "popart")} == {"cutout_failed"}
    assert job.status == "failed"
    assert queued[0][1].count("result.failed") == 3
    # Counted once the job closed, by code: the operators' "errors by code".
    metrics = process.context.metrics
    assert metrics.counter_value(RESULTS_FAILED, {"code": "timeout"}) == 1
    assert metrics.counter_value(RESULTS_FAILED, {"code": "cutout_failed"}) == 2
    assert metrics.histogram_totals(FIRST_RESULT_SECONDS) == (0, 0.0), "no result came"
