"""Job records and events in a real Redis: a result finishes once, the last one closes the job."""

from __future__ import annotations

import threading

import pytest

from shared.errors import JobNotFound
from shared.jobs import (
    CUTOUT,
    JobRecord,
    JobRequest,
    JobStore,
    ResultRecord,
    StoredObject,
    new_job_id,
    read_events,
)
from shared.jobs.model import ResultStatus
from shared.jobs.store import job_key
from shared.output import OutputFormat

RESULT_SUCCEEDED = ResultStatus.SUCCEEDED
RESULT_FAILED = ResultStatus.FAILED
STORED = StoredObject("results/ab/x.webp", "image/webp", 10, 10, 8)


@pytest.fixture
def store(text_redis):
    return JobStore(text_redis, ttl_s=600)


def request(effects=("color", "popart"), primary="popart") -> JobRequest:
    return JobRequest(
        input_sha256="ab" * 32,
        input_key="inputs/ab/x.png",
        width=10,
        height=8,
        effects=effects,
        primary=primary,
        output=OutputFormat(),
        params={name: {} for name in effects},
    )


def finish(store, job_id, name, status=RESULT_SUCCEEDED):
    record = ResultRecord(name=name)
    if status == RESULT_FAILED:
        return store.fail_result(job_id, record, "failed", "test failure")
    return store.succeed_result(job_id, record, STORED, cached=False)


def event_types(store, job_id):
    return [event.type for event in read_events(store.redis, job_id, "0-0", None)]


def test_create_and_read_back(store):
    job_id = new_job_id()
    store.create(job_id, request())
    job = store.get(job_id)
    assert job.status == "queued"
    assert list(job.results) == [CUTOUT, "popart", "color"]
    assert event_types(store, job_id) == ["job.accepted"]
    assert store.redis.ttl(job_key(job_id)) > 0


def test_unknown_job(store):
    with pytest.raises(JobNotFound):
        store.get("missing")


def test_the_last_result_closes_the_job(store):
    job_id = new_job_id()
    store.create(job_id, request())
    assert store.start_result(job_id, ResultRecord(name=CUTOUT))
    for name in (CUTOUT, "popart", "color"):
        assert store.get(job_id).status == "running"
        assert finish(store, job_id, name)
    assert store.get(job_id).status == "succeeded"
    assert event_types(store, job_id) == [
        "job.accepted",
        "job.started",
        "result.succeeded",
        "result.succeeded",
        "result.succeeded",
        "job.finished",
    ]


def test_a_result_finishes_once(store):
    job_id = new_job_id()
    store.create(job_id, request())
    assert finish(store, job_id, CUTOUT)
    assert not finish(store, job_id, CUTOUT, RESULT_FAILED)
    assert store.get(job_id).results[CUTOUT].status == RESULT_SUCCEEDED
    assert not store.start_result(job_id, ResultRecord(name=CUTOUT))


@pytest.mark.parametrize(
    ("failed", "final"),
    [((), "succeeded"), (("color",), "partial"), ((CUTOUT, "popart", "color"), "failed")],
)
def test_final_status(store, failed, final):
    job_id = new_job_id()
    store.create(job_id, request())
    for name in (CUTOUT, "popart", "color"):
        finish(store, job_id, name, RESULT_FAILED if name in failed else RESULT_SUCCEEDED)
    assert store.get(job_id).status == final
    final_event = read_events(store.redis, job_id, "0-0", None)[-1]
    assert final_event.type == "job.finished"
    assert final_event.data["status"] == final


def test_failing_the_unfinished_results(store):
    job_id = new_job_id()
    store.create(job_id, request())
    finish(store, job_id, CUTOUT, RESULT_FAILED)
    store.fail_unfinished(job_id, "cutout_failed", "no cutout")
    job = store.get(job_id)
    assert job.status == "failed"
    assert job.results["popart"].error == {"code": "cutout_failed", "message": "no cutout"}


def test_concurrent_finishers_close_the_job_exactly_once(store):
    effects = tuple(f"effect{i}" for i in range(20))
    job_id = new_job_id()
    store.create(job_id, request(effects, effects[0]))
    names = [CUTOUT, *effects]
    threads = [threading.Thread(target=finish, args=(store, job_id, name)) for name in names * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    types = event_types(store, job_id)
    assert types.count("job.finished") == 1
    assert types.count("result.succeeded") == len(names)
    assert types[-1] == "job.finished"


def test_the_finish_callback_given_at_construction_gets_the_closed_job_once(text_redis):
    closed: list[JobRecord] = []
    store = JobStore(text_redis, ttl_s=600, on_job_finished=closed.append)
    job_id = new_job_id()
    store.create(job_id, request(("color",), "color"))
    finish(store, job_id, CUTOUT)
    assert closed == []
    finish(store, job_id, "color", RESULT_FAILED)
    assert [(job.id, job.status) for job in closed] == [(job_id, "partial")]
    assert closed[0].results["color"].error == {"code": "failed", "message": "test failure"}


def test_the_subject_is_given_in_the_uploads_pixels():
    # A 4032×3024 phone photo processed at 2048×1536: the box scales back by 1.96875.
    scaled = JobRequest(
        input_sha256="ab" * 32,
        input_key="inputs/ab/x.png",
        width=2048,
        height=1536,
        effects=("color",),
        primary="color",
        output=OutputFormat(),
        params={"color": {}},
        source_width=4032,
        source_height=3024,
    )
    facts = {"x": 100, "y": 50, "width": 1000, "height": 800, "coverage": 0.31}
    assert scaled.subject_in_upload(facts) == {
        "x": 197,
        "y": 98,
        "width": 1969,
        "height": 1575,
        "coverage": 0.31,
    }
    assert scaled.subject_in_upload(None) is None
