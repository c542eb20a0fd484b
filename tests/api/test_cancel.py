"""DELETE /v1/jobs/<id> and Cancel-After through the real API, Redis and Celery workers."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import pytest
import redis

from api import create_app
from shared.telemetry import MODEL_INFERENCES, TASKS, Metrics
from tests.conftest import WorkerProcesses, make_settings, redis_url_for
from tests.helpers import image_bytes, sample_variant, submit, wait_finished

#: The database of a module's own workers (tests/conftest.py): jobs must sit in the
#: queue until this test starts its workers.
CANCEL_REDIS_URL = redis_url_for("CUTFX_TEST_STACK_REDIS_URL")
RESULTS = ["cutout", "color", "enhancedblackwhite", "popart", "dithering"]


def submit_with(client, headers: dict[str, str], data: bytes | None = None, **form: str):
    return client.post(
        "/v1/jobs",
        data={"image": (io.BytesIO(data or image_bytes()), "a.png"), **form},
        content_type="multipart/form-data",
        headers=headers,
    )


def stream_events(client, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    body = client.get(f"/v1/jobs/{job_id}/events").get_data(as_text=True)
    found = []
    for block in body.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if ": " in line and line[0] != ":"
        )
        if "event" in fields:
            found.append((fields["event"], json.loads(fields["data"])))
    return found


def test_canceling_a_queued_job_records_and_announces_it(client):
    job_id = submit(client, image_bytes()).get_json()["id"]

    answer = client.delete(f"/v1/jobs/{job_id}")

    assert answer.status_code == 200
    job = answer.get_json()
    assert job["status"] == "canceled"
    assert job["finished_at"] is not None
    for name in RESULTS:
        assert job["results"][name]["status"] == "canceled"
        assert job["results"][name]["error"]["code"] == "canceled"
    events = stream_events(client, job_id)
    assert [kind for kind, _ in events] == [
        "job.accepted",
        *["result.canceled"] * 5,
        "job.finished",
    ]
    assert events[-1][1] == {"status": "canceled", "succeeded": 0, "failed": 0, "canceled": 5}
    again = client.delete(f"/v1/jobs/{job_id}")
    assert again.status_code == 200
    assert again.get_json()["status"] == "canceled"
    assert stream_events(client, job_id) == events, "a second cancel changes nothing"


def test_cancel_of_an_unknown_job_is_a_404(client):
    answer = client.delete("/v1/jobs/0123456789abcdef0123456789abcdef")
    assert answer.status_code == 404
    assert answer.get_json()["error"]["code"] == "job_not_found"


@pytest.mark.parametrize("value", ["90", "1.5", "1m30s", "2h", "500ms1s", " 10s "])
def test_cancel_after_takes_seconds_and_durations(client, value):
    before = time.time()
    answer = submit_with(client, {"Cancel-After": value})
    assert answer.status_code == 202, answer.get_json()
    job = client.get(f"/v1/jobs/{answer.get_json()['id']}").get_json()
    assert job["cancel_at"] > before


@pytest.mark.parametrize("value", ["", "soon", "0", "-5", "0.5", "25h", "1d", "10s10", "1e3"])
def test_a_bad_cancel_after_is_a_400_naming_the_header(client, value):
    answer = submit_with(client, {"Cancel-After": value})
    assert answer.status_code == 400
    assert answer.get_json()["error"]["field"] == "Cancel-After"


@pytest.mark.e2e
def test_canceled_and_overdue_jobs_run_no_model_when_their_tasks_come_up(
    checkpoint, tmp_path, tmp_path_factory
):
    """Jobs wait in the queue with no worker; one is canceled, one passes its deadline; the
    workers started afterwards skip both and run only the third job's inference."""
    settings = make_settings(CANCEL_REDIS_URL, tmp_path / "storage", model_ckpt=str(checkpoint))
    broker = redis.Redis.from_url(CANCEL_REDIS_URL)
    broker.flushdb()
    api = create_app({"TESTING": True, "CUTFX_SETTINGS": settings}).test_client()
    metrics = Metrics(redis.Redis.from_url(CANCEL_REDIS_URL, decode_responses=True))

    canceled = submit(api, sample_variant()).get_json()["id"]
    assert api.delete(f"/v1/jobs/{canceled}").get_json()["status"] == "canceled"
    overdue = submit_with(api, {"Cancel-After": "1s"}, sample_variant()).get_json()["id"]
    wanted = submit(api, sample_variant(), effects="color").get_json()["id"]
    time.sleep(1.5)

    workers = WorkerProcesses(settings, tmp_path_factory.mktemp("cancel-logs"), {})
    workers.start()
    try:
        workers.wait_ready(broker)
        finished = wait_finished(api, wanted)
        overdue_job = wait_finished(api, overdue, timeout_s=30)
        canceled_job = api.get(f"/v1/jobs/{canceled}").get_json()
        inferences = metrics.counter_value(MODEL_INFERENCES)
        effect_tasks = metrics.counter_value(TASKS, {"task": "cutfx.apply_effect"})
    finally:
        workers.stop()
        broker.flushdb()

    assert finished["status"] == "succeeded"
    assert overdue_job["status"] == "canceled"
    assert {r["error"]["message"] for r in overdue_job["results"].values()} == {
        "canceled: the job's Cancel-After deadline passed"
    }
    assert canceled_job["status"] == "canceled"
    assert inferences == 1, "only the wanted job ran the model"
    assert effect_tasks == 1, "no effect task was queued for the canceled jobs"
