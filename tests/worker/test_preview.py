"""preview=true: a base-mode worker answers a `preview` cutout from the fast model first,
announced before the cutout; repeats answer it from the cache. Real API, Redis, workers."""

from __future__ import annotations

import io
import json

import pytest
import redis
from PIL import Image

from api import create_app
from shared.telemetry import MODEL_INFERENCES, Metrics
from tests.conftest import WorkerProcesses, make_settings, redis_url_for
from tests.helpers import image_bytes, log_records, sample_variant, submit, wait_finished

#: The database of a module's own workers (tests/conftest.py): these run base mode.
PREVIEW_REDIS_URL = redis_url_for("CUTFX_TEST_STACK_REDIS_URL")


def event_names(api, job_id: str) -> list[tuple[str, str]]:
    """(event type, result name or "") in the order the job's stream sends them."""
    body = api.get(f"/v1/jobs/{job_id}/events").get_data(as_text=True)
    found = []
    for block in body.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            data = json.loads(fields["data"])
            found.append((fields["event"], data.get("name", "")))
    return found


def test_preview_must_be_a_flag(client):
    answer = submit(client, image_bytes(), preview="maybe")
    assert answer.status_code == 422
    assert answer.get_json()["error"]["field"] == "preview"


def test_a_job_has_a_preview_result_only_when_asked(client):
    plain = submit(client, image_bytes()).get_json()
    asked = submit(client, image_bytes(seed=1), preview="true").get_json()
    plain_results = client.get(f"/v1/jobs/{plain['id']}").get_json()["results"]
    asked_results = client.get(f"/v1/jobs/{asked['id']}").get_json()["results"]
    assert "preview" not in plain_results
    assert {"preview", "cutout"} <= set(asked_results)
    assert asked_results["preview"]["status"] == "pending"


@pytest.mark.e2e
def test_a_base_mode_worker_answers_the_preview_from_the_fast_model_first(
    checkpoint, tmp_path, tmp_path_factory
):
    # The generated checkpoint serves both modes: one architecture, the input size differs.
    settings = make_settings(
        PREVIEW_REDIS_URL,
        tmp_path / "storage",
        model_mode="base",
        model_ckpt=str(checkpoint),
        preview_ckpt=str(checkpoint),
    )
    broker = redis.Redis.from_url(PREVIEW_REDIS_URL)
    broker.flushdb()
    app = create_app({"TESTING": True, "CUTFX_SETTINGS": settings})
    api = app.test_client()
    metrics = Metrics(redis.Redis.from_url(PREVIEW_REDIS_URL, decode_responses=True))
    photo = sample_variant()
    workers = WorkerProcesses(settings, tmp_path_factory.mktemp("preview-logs"), {})
    workers.start()
    try:
        workers.wait_ready(broker)
        first = submit(api, photo, effects="color", preview="true").get_json()
        job = wait_finished(api, first["id"], timeout_s=300)
        events = event_names(api, first["id"])
        inferences = metrics.counter_value(MODEL_INFERENCES)
        cutout_model = app.extensions["cutfx"].jobs.get(first["id"]).model_id
        repeat = submit(api, photo, effects="color", preview="true").get_json()
        preview_image = api.get(job["results"]["preview"]["url"]).get_data()
        log = workers.log_dir / "worker-gpu.log"
    finally:
        workers.stop()
        broker.flushdb()

    assert job["status"] == "succeeded"
    preview, cutout = job["results"]["preview"], job["results"]["cutout"]
    assert preview["status"] == cutout["status"] == "succeeded"
    assert preview["url"] != cutout["url"], "the preview is its own image"
    assert (preview["width"], preview["height"]) == (cutout["width"], cutout["height"])
    assert Image.open(io.BytesIO(preview_image)).size == (cutout["width"], cutout["height"])
    succeeded = [name for kind, name in events if kind == "result.succeeded"]
    assert succeeded.index("preview") < succeeded.index("cutout")
    assert inferences == 2, "one fast inference for the preview, one base for the cutout"
    ready = log_records(log, containing='"preview ready"')
    assert len(ready) == 1
    assert "-fast-" in ready[0]["model_id"]
    assert "-base-" in cutout_model
    # The same photo again: the cutout is cached, so it answers the preview too, at once.
    assert repeat["status"] == "succeeded"
    assert repeat["results"]["preview"]["url"] == repeat["results"]["cutout"]["url"]
