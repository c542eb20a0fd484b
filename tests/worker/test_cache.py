"""The result cache with real workers: repeats are free, changes miss, dead entries repair."""

from __future__ import annotations

import io
import json
import threading
from typing import Any

import pytest
from PIL import Image

from shared.jobs import StoredObject
from shared.telemetry import CACHE_LOOKUPS, MODEL_INFERENCES, TASKS, Metrics
from tests.helpers import sample_variant, submit, wait_finished

pytestmark = pytest.mark.e2e


@pytest.fixture
def metrics(e2e_app):
    return Metrics(e2e_app.extensions["cutfx"].redis)


def tasks_run(metrics: Metrics) -> int:
    return sum(
        metrics.counter_value(TASKS, {"task": name})
        for name in ("cutfx.segment", "cutfx.apply_effect")
    )


def first_job(client, photo: bytes, **form: str) -> dict[str, Any]:
    body = submit(client, photo, **form).get_json()
    return wait_finished(client, body["id"])


def test_a_repeat_completes_at_submit_without_any_task(e2e_client, metrics):
    photo = sample_variant()
    first = first_job(e2e_client, photo)
    assert not any(r["cached"] for r in first["results"].values())
    before = tasks_run(metrics)
    response = submit(e2e_client, photo)
    assert response.status_code == 202
    repeat = response.get_json()
    assert repeat["status"] == "succeeded", "finished in the 202 answer itself"
    assert all(r["cached"] and r["status"] == "succeeded" for r in repeat["results"].values())
    for name, result in repeat["results"].items():
        assert result["url"]
        download = e2e_client.get(result["url"])
        assert download.status_code == 200
        assert len(download.data) == first["results"][name]["bytes"]
    assert wait_finished(e2e_client, repeat["id"])["status"] == "succeeded"
    assert tasks_run(metrics) == before, "no task was sent to any worker"


def test_a_changed_parameter_misses_only_that_effect(e2e_client, metrics):
    photo = sample_variant()
    first_job(e2e_client, photo)
    inferences = metrics.counter_value(MODEL_INFERENCES)
    changed = submit(e2e_client, photo, params=json.dumps({"popart": {"contrast": 3.0}})).get_json()
    job = wait_finished(e2e_client, changed["id"])
    cached = {name: result["cached"] for name, result in job["results"].items()}
    assert cached == {
        "cutout": True,
        "color": True,
        "enhancedblackwhite": True,
        "popart": False,
        "dithering": True,
    }
    assert metrics.counter_value(MODEL_INFERENCES) == inferences, "the GPU was skipped"


def test_another_format_misses_the_effects_but_not_the_cutout(e2e_client):
    photo = sample_variant()
    first_job(e2e_client, photo)
    job = first_job(e2e_client, photo, format="jpeg")
    assert job["results"]["cutout"]["cached"]
    assert not job["results"]["color"]["cached"]
    assert job["results"]["color"]["content_type"] == "image/jpeg"


def test_the_same_picture_in_another_file_reuses_the_cutout(e2e_client, metrics):
    """A shop's CMS re-saves a photo (here a PNG as a TIFF): the same pixels, other bytes.
    The cutout and the effects made from it come from the cache, in the 202 itself."""
    photo = sample_variant()
    as_tiff = io.BytesIO()
    Image.open(io.BytesIO(photo)).save(as_tiff, "TIFF", compression="tiff_deflate")
    assert as_tiff.getvalue() != photo
    before = metrics.counter_value(MODEL_INFERENCES)
    first = first_job(e2e_client, photo)
    response = submit(e2e_client, as_tiff.getvalue())
    again = response.get_json()
    assert response.status_code == 202
    assert not first["results"]["cutout"]["cached"]
    assert again["status"] == "succeeded", "finished in the 202 answer itself"
    assert all(result["cached"] for result in again["results"].values())
    assert again["results"]["cutout"]["bytes"] == first["results"]["cutout"]["bytes"]
    assert metrics.counter_value(MODEL_INFERENCES) == before + 1


def test_concurrent_duplicates_run_the_model_once(e2e_client, metrics):
    photo = sample_variant()
    before = metrics.counter_value(MODEL_INFERENCES)
    bodies: list[dict[str, Any]] = []
    threads = [
        threading.Thread(target=lambda: bodies.append(submit(e2e_client, photo).get_json()))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    jobs = [wait_finished(e2e_client, body["id"]) for body in bodies]
    assert all(job["status"] == "succeeded" for job in jobs)
    assert jobs[0]["id"] != jobs[1]["id"]
    assert metrics.counter_value(MODEL_INFERENCES) == before + 1


def test_an_entry_whose_object_is_gone_is_a_miss_and_is_repaired(e2e_client, e2e_app, metrics):
    photo = sample_variant()
    first = first_job(e2e_client, photo)
    storage = e2e_app.extensions["cutfx"].storage
    cache = e2e_app.extensions["cutfx"].cache
    popart_key = first["results"]["popart"]["url"].split("/v1/files/")[1].split("?")[0]
    storage.path_of(popart_key).unlink()
    misses = metrics.counter_value(
        CACHE_LOOKUPS, {"kind": "effect", "outcome": "miss", "where": "submit"}
    )
    repeat = submit(e2e_client, photo).get_json()
    assert repeat["status"] != "succeeded", "a dead link was not served"
    job = wait_finished(e2e_client, repeat["id"])
    assert not job["results"]["popart"]["cached"]
    assert job["results"]["color"]["cached"]
    assert e2e_client.get(job["results"]["popart"]["url"]).status_code == 200
    assert storage.exists(popart_key)
    assert isinstance(cache.lookup(popart_key), StoredObject)
    assert (
        metrics.counter_value(
            CACHE_LOOKUPS, {"kind": "effect", "outcome": "miss", "where": "submit"}
        )
        > misses
    )


def test_hits_and_misses_are_on_the_metrics_endpoint(e2e_client):
    photo = sample_variant()
    first_job(e2e_client, photo)
    submit(e2e_client, photo)
    text = e2e_client.get("/metrics").get_data(as_text=True)
    assert 'cutfx_cache_lookups_total{kind="cutout",outcome="hit",where="submit"}' in text
    assert 'cutfx_cache_lookups_total{kind="effect",outcome="miss",where="worker"}' in text
