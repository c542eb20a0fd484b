"""Cancel and Cancel-After deadlines in a real Redis: unfinished results canceled, once."""

from __future__ import annotations

import json
import threading

import pytest

from shared.jobs import JobRecord, JobStore, ResultRecord, new_job_id, read_events
from shared.jobs.model import JobStatus, Owner, ResultStatus
from shared.jobs.store import DEADLINES_KEY, active_jobs_key, job_key
from tests.shared.test_jobstore import STORED, event_types, request
from worker.periodic import cancel_overdue


@pytest.fixture
def store_with_job(text_redis):
    store = JobStore(text_redis, ttl_s=600)
    job_id = new_job_id()
    store.create(job_id, request())
    return store, job_id


def events(store, job_id):
    return [(e.type, e.data) for e in read_events(store.redis, job_id, "0-0", None)]


def test_canceling_a_queued_job_cancels_every_result_and_closes_it(text_redis):
    closed: list[JobRecord] = []
    store = JobStore(text_redis, ttl_s=600, on_job_finished=closed.append)
    job_id = new_job_id()
    owner = Owner("key_0123456789abcdef")
    store.claim_active_slot(owner.key_id, job_id, cap=5)
    store.create(job_id, request(), owner=owner)

    assert store.cancel(job_id, "canceled by the client")

    job = store.get(job_id)
    assert job.status == JobStatus.CANCELED
    assert job.finished
    assert job.finished_at is not None
    for result in job.results.values():
        assert result.status == ResultStatus.CANCELED
        assert result.error == {"code": "canceled", "message": "canceled by the client"}
        assert "finished_at" in result.timings
    assert event_types(store, job_id) == [
        "job.accepted",
        "result.canceled",
        "result.canceled",
        "result.canceled",
        "job.finished",
    ]
    final = events(store, job_id)[-1][1]
    assert final == {"status": "canceled", "succeeded": 0, "failed": 0, "canceled": 3}
    assert [j.id for j in closed] == [job_id], "on_job_finished ran once"
    assert text_redis.zcard(active_jobs_key(owner.key_id)) == 0, "the active slot is free"


def test_a_task_that_comes_up_after_the_cancel_does_nothing(store_with_job):
    store, job_id = store_with_job
    store.cancel(job_id, "canceled by the client")
    record = store.get(job_id).results["cutout"]
    assert not store.start_result(job_id, record)
    assert not store.succeed_result(job_id, ResultRecord(name="cutout"), STORED, cached=False)
    assert store.get(job_id).results["cutout"].status == ResultStatus.CANCELED


def test_finished_results_stay_and_only_the_rest_is_canceled(store_with_job):
    store, job_id = store_with_job
    store.succeed_result(job_id, ResultRecord(name="cutout"), STORED, cached=False)
    store.start_result(job_id, ResultRecord(name="popart"))

    assert store.cancel(job_id, "canceled by the client")

    job = store.get(job_id)
    assert job.results["cutout"].status == ResultStatus.SUCCEEDED
    assert job.results["cutout"].key == STORED.key, "the finished result stays downloadable"
    assert job.results["popart"].status == ResultStatus.CANCELED, "a running one is canceled"
    assert job.results["color"].status == ResultStatus.CANCELED
    final = events(store, job_id)[-1][1]
    assert final == {"status": "canceled", "succeeded": 1, "failed": 0, "canceled": 2}


def test_a_finished_job_cannot_be_canceled(store_with_job):
    store, job_id = store_with_job
    for name in ("cutout", "popart", "color"):
        store.succeed_result(job_id, ResultRecord(name=name), STORED, cached=False)
    before = event_types(store, job_id)

    assert not store.cancel(job_id, "too late")
    assert store.get(job_id).status == JobStatus.SUCCEEDED
    assert event_types(store, job_id) == before


def test_concurrent_cancels_close_the_job_once(text_redis):
    closed: list[JobRecord] = []
    store = JobStore(text_redis, ttl_s=600, on_job_finished=closed.append)
    job_id = new_job_id()
    store.create(job_id, request())
    outcomes: list[bool] = []
    threads = [
        threading.Thread(target=lambda: outcomes.append(store.cancel(job_id, "x")))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count(True) == 1
    assert len(closed) == 1
    assert event_types(store, job_id).count("job.finished") == 1


def test_a_deadline_cancels_only_jobs_past_it_once_across_sweepers(text_redis):
    store = JobStore(text_redis, ttl_s=600)
    due, later, done = new_job_id(), new_job_id(), new_job_id()
    store.create(due, request(), cancel_after_s=1)
    store.create(later, request(), cancel_after_s=3600)
    store.create(done, request(), cancel_after_s=1)
    for name in ("cutout", "popart", "color"):
        store.succeed_result(done, ResultRecord(name=name), STORED, cached=False)
    assert text_redis.zscore(DEADLINES_KEY, done) is None, "a finished job leaves the list"
    created_at = store.get(due).created_at
    assert store.get(due).cancel_at == round(created_at + 1, 3)

    notified: list[str] = []
    at = created_at + 2
    counts = [
        cancel_overdue(store, notified.append, at),
        cancel_overdue(store, notified.append, at),
    ]

    assert counts == [1, 0]
    assert notified == [due]
    assert store.get(due).status == JobStatus.CANCELED
    error = store.get(due).results["cutout"].error
    assert error is not None
    assert error["message"].startswith("canceled: the job's")
    assert store.get(later).status == JobStatus.QUEUED
    assert store.get(done).status == JobStatus.SUCCEEDED
    assert text_redis.zrange(DEADLINES_KEY, 0, -1) == [later]


def test_a_token_sees_only_its_own_jobs_and_the_key_sees_all(text_redis):
    store = JobStore(text_redis, ttl_s=600)
    key = "key_0123456789abcdef"
    by_token, by_key = new_job_id(), new_job_id()
    store.create(by_token, request(), owner=Owner(key, "tok_a"))
    store.create(by_key, request(), owner=Owner(key))
    assert store.get(by_token).owned_by(Owner(key))
    assert store.get(by_token).owned_by(Owner(key, "tok_a"))
    assert not store.get(by_token).owned_by(Owner(key, "tok_b"))
    assert not store.get(by_key).owned_by(Owner(key, "tok_a"))
    assert not store.get(by_token).owned_by(Owner("key_fedcba9876543210"))
    stored = json.loads(json.dumps(text_redis.hgetall(job_key(by_token))))
    assert stored["token_id"] == "tok_a"
    assert stored["owner"] == key
