"""A job end to end: HTTP → Redis → real Celery workers → real model code → storage → HTTP."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shared.jobs import read_events
from tests.helpers import decode, sample_variant, submit, wait_finished

pytestmark = pytest.mark.e2e


def test_a_photo_becomes_a_cutout_and_four_effects(e2e_client):
    response = submit(e2e_client, sample_variant(), "chelsea.png", primary="dithering")
    assert response.status_code == 202
    job = wait_finished(e2e_client, response.get_json()["id"])
    assert job["status"] == "succeeded"
    assert set(job["results"]) == {"cutout", "color", "enhancedblackwhite", "popart", "dithering"}
    for name, result in job["results"].items():
        assert result["status"] == "succeeded", (name, result)
        download = e2e_client.get(result["url"])
        assert download.status_code == 200
        assert download.content_type == result["content_type"]
        assert len(download.data) == result["bytes"]
        image = decode(download.data)
        assert image.size == (451, 300) == (result["width"], result["height"])
        assert image.mode == "RGBA", f"{name} keeps the cutout's transparency"
        assert result["timings"]["queued_at"] <= result["timings"]["started_at"]
        assert result["timings"]["started_at"] <= result["timings"]["finished_at"]
    assert job["results"]["cutout"]["content_type"] == "image/webp", "in the format asked for"
    assert job["results"]["popart"]["content_type"] == "image/webp"
    assert job["results"]["cutout"]["timings"]["inference_s"] > 0
    assert job["timings"]["total_s"] >= job["results"]["cutout"]["timings"]["inference_s"]


def test_events_put_the_cutout_first_and_the_primary_effect_starts_first(e2e_client, e2e_app):
    body = submit(e2e_client, sample_variant(), primary="popart", format="png").get_json()
    job = wait_finished(e2e_client, body["id"])
    redis = e2e_app.extensions["cutfx"].redis
    events = read_events(redis, body["id"], "0-0", None)
    results = [e.data["name"] for e in events if e.type.startswith("result.")]
    assert results[0] == "cutout"
    assert events[0].type == "job.accepted"
    assert events[-1].type == "job.finished"
    # Two cpu processes take effects in parallel, so finishing order is not fixed;
    # the primary effect is queued first, at the highest priority.
    started = {name: r["timings"]["started_at"] for name, r in job["results"].items()}
    others = [started[name] for name in ("color", "enhancedblackwhite", "dithering")]
    assert started["popart"] <= min(others) + 0.05
    assert started["cutout"] < started["popart"]


def test_a_png_job_gets_the_lossless_cutout(e2e_client):
    body = submit(e2e_client, sample_variant(), effects="color", format="png").get_json()
    cutout = wait_finished(e2e_client, body["id"])["results"]["cutout"]
    assert cutout["content_type"] == "image/png"
    assert decode(e2e_client.get(cutout["url"]).data).mode == "RGBA"


def test_a_failing_effect_leaves_the_others_intact(e2e_client):
    body = submit(e2e_client, sample_variant(), effects="color,explode,dithering").get_json()
    job = wait_finished(e2e_client, body["id"])
    assert job["status"] == "partial"
    assert job["results"]["explode"]["status"] == "failed"
    assert job["results"]["explode"]["error"]["code"] == "internal_error"
    for name in ("cutout", "color", "dithering"):
        assert job["results"][name]["status"] == "succeeded"
        assert e2e_client.get(job["results"][name]["url"]).status_code == 200


def test_a_worker_killed_mid_task_has_its_task_retried(e2e_client, crash_marker):
    crash_marker.unlink(missing_ok=True)
    body = submit(e2e_client, sample_variant(), effects="crash_once,color").get_json()
    job = wait_finished(e2e_client, body["id"])
    assert crash_marker.exists(), "the worker process really died once"
    assert job["status"] == "succeeded", json.dumps(job["results"]["crash_once"])
    assert job["results"]["crash_once"]["status"] == "succeeded"


def test_effect_parameters_reach_the_worker(e2e_client):
    first = submit(e2e_client, sample_variant(), effects="dithering").get_json()
    second = submit(
        e2e_client,
        sample_variant(),
        effects="dithering",
        params=json.dumps({"dithering": {"pixel_spacing": 5, "dot_size": 1}}),
    ).get_json()
    sparse = wait_finished(e2e_client, second["id"])["results"]["dithering"]
    dense = wait_finished(e2e_client, first["id"])["results"]["dithering"]
    assert sparse["url"] != dense["url"]
    black_share = [
        (np.asarray(decode(e2e_client.get(r["url"]).data).convert("L")) < 128).mean()
        for r in (sparse, dense)
    ]
    assert black_share[0] < black_share[1]
