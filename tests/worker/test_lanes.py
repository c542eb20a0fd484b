"""Lanes: a batch job's tasks wait behind interactive ones, on Celery's own priorities on
Redis, and move ahead once they have waited CUTFX_BATCH_MAX_WAIT_S: never starved."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from shared.queues import PRIORITY_BATCH, QUEUE_GPU, QUEUED_AT_HEADER
from tests.api.keys import KEY_A, KEY_B, bearer, keyed_submit
from tests.helpers import sample_variant, submit, wait_finished
from worker.periodic import promote_aged

BATCH_LIST = f"{QUEUE_GPU}:{PRIORITY_BATCH}"


def message(task_id: str, queued_at: float | None) -> str:
    """A task message as kombu stores it: its headers carry when it was queued."""
    headers = {"id": task_id} if queued_at is None else {"id": task_id, QUEUED_AT_HEADER: queued_at}
    return json.dumps({"body": "", "headers": headers, "properties": {}})


def ids(client, name: str) -> list[str]:
    return [json.loads(raw)["headers"]["id"] for raw in client.lrange(name, 0, -1)]


def test_a_batch_task_that_waited_long_enough_goes_to_the_front(text_redis):
    now = time.time()
    # Kombu pushes on the left: the list's last item is the oldest.
    text_redis.lpush(BATCH_LIST, message("old", now - 120), message("new", now - 5))
    text_redis.lpush(QUEUE_GPU, message("waiting-person", now - 1))
    assert promote_aged(text_redis, max_wait_s=60, at=now) == 1
    assert ids(text_redis, BATCH_LIST) == ["new"]
    # The interactive list's last item is served next: the aged batch task.
    assert ids(text_redis, QUEUE_GPU) == ["waiting-person", "old"]
    assert promote_aged(text_redis, max_wait_s=60, at=now) == 0, "the young one stays"


def test_a_key_s_burst_waiting_in_a_lower_list_moves_ahead_too(text_redis):
    now = time.time()
    text_redis.lpush(f"{QUEUE_GPU}:6", message("third-of-a-burst", now - 90))
    assert promote_aged(text_redis, max_wait_s=60, at=now) == 1
    assert ids(text_redis, QUEUE_GPU) == ["third-of-a-burst"]


def test_a_message_without_its_time_or_not_json_is_left_where_it_is(text_redis):
    text_redis.lpush(BATCH_LIST, message("unstamped", None))
    assert promote_aged(text_redis, max_wait_s=0) == 0
    text_redis.delete(BATCH_LIST)
    text_redis.lpush(BATCH_LIST, "not json")
    assert promote_aged(text_redis, max_wait_s=0) == 0
    assert text_redis.lrange(BATCH_LIST, 0, -1) == ["not json"]


def test_the_lane_is_checked(client):
    answer = submit(client, sample_variant(), lane="vip")
    assert answer.status_code == 422
    assert answer.get_json()["error"]["field"] == "lane"


@pytest.mark.e2e
def test_a_person_s_photo_goes_ahead_of_a_folder_already_queued(e2e_client):
    folder = [
        submit(e2e_client, sample_variant(), effects="color", lane="batch").get_json()["id"]
        for _ in range(3)
    ]
    person = submit(e2e_client, sample_variant(), effects="color").get_json()["id"]
    finished = {job_id: wait_finished(e2e_client, job_id) for job_id in [*folder, person]}

    def cutout_done(job_id: str) -> float:
        return float(finished[job_id]["results"]["cutout"]["timings"]["finished_at"])

    # The first of the folder may already run when the person's photo arrives; the
    # person's comes next, before the rest of the folder.
    assert cutout_done(person) < cutout_done(folder[1])
    assert cutout_done(person) < cutout_done(folder[2])
    assert all(finished[job_id]["status"] == "succeeded" for job_id in finished)


@pytest.fixture
def two_keys_client(workers, e2e_settings):
    from api import create_app

    settings = e2e_settings.with_overrides(api_keys=(KEY_A, KEY_B))
    return create_app({"TESTING": True, "CUTFX_SETTINGS": settings}).test_client()


@pytest.mark.e2e
def test_one_key_s_burst_does_not_hold_back_another_key_s_photo(two_keys_client):
    burst = [
        keyed_submit(two_keys_client, KEY_A, sample_variant(), effects="color").get_json()["id"]
        for _ in range(4)
    ]
    other = keyed_submit(two_keys_client, KEY_B, sample_variant(), effects="color").get_json()["id"]

    def cutout_done(job_id: str, key: str) -> float:
        job = wait_finished_as(two_keys_client, job_id, key)
        assert job["status"] == "succeeded"
        return float(job["results"]["cutout"]["timings"]["finished_at"])

    done = {job_id: cutout_done(job_id, KEY_A) for job_id in burst}
    done[other] = cutout_done(other, KEY_B)
    # A's first may already run; B's first photo comes next, ahead of A's others.
    assert all(done[other] < done[job_id] for job_id in burst[1:])


def wait_finished_as(client, job_id: str, key: str, timeout_s: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}?wait=5", headers=bearer(key)).get_json()
        if job["status"] in ("succeeded", "failed", "partial", "canceled"):
            return job
    raise TimeoutError(job_id)
