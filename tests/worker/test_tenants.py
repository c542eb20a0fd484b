"""Tenants through the real API, workers and Redis: one key's jobs and cache are its own."""

from __future__ import annotations

import io
import time
from typing import Any

import pytest
import requests

from api import create_app
from shared.jobs.plan import GLOBAL_SCOPE, cache_scope
from shared.telemetry import MODEL_INFERENCES, Metrics
from tests.conftest import LiveServer
from tests.helpers import FINISHED, sample_variant

pytestmark = pytest.mark.e2e

KEY_A = "sk_tenant_a_e2e_0123456789"
KEY_B = "sk_tenant_b_e2e_0123456789"


@pytest.fixture
def tenant_server(workers, e2e_settings):
    settings = e2e_settings.with_overrides(api_keys=(KEY_A, KEY_B))
    app = create_app({"TESTING": True, "CUTFX_SETTINGS": settings})
    with LiveServer(app) as server:
        yield server, Metrics(app.extensions["cutfx"].redis)


def submit_as(base: str, key: str, photo: bytes) -> dict[str, Any]:
    response = requests.post(
        f"{base}/v1/jobs",
        files={"image": ("pet.png", io.BytesIO(photo))},
        data={"effects": "color"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    return response.json()


def finished_as(base: str, key: str, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        job = requests.get(
            f"{base}/v1/jobs/{job_id}?wait=5",
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        ).json()
        if job["status"] in FINISHED:
            return job
    raise TimeoutError(job_id)


def test_a_tenant_never_learns_that_another_uploaded_the_same_photo(tenant_server):
    server, metrics = tenant_server
    photo = sample_variant()
    first = finished_as(server.url, KEY_A, submit_as(server.url, KEY_A, photo)["id"])
    assert first["status"] == "succeeded"
    inferences = metrics.counter_value(MODEL_INFERENCES)

    other = submit_as(server.url, KEY_B, photo)
    assert other["status"] == "queued", "B's job was not answered from A's cache"
    finished = finished_as(server.url, KEY_B, other["id"])
    assert not any(result["cached"] for result in finished["results"].values())
    assert metrics.counter_value(MODEL_INFERENCES) == inferences + 1, "the model ran for B"

    again = submit_as(server.url, KEY_A, photo)
    assert again["status"] == "succeeded", "A's own repeat is still free"
    assert all(result["cached"] for result in again["results"].values())


def test_another_tenants_job_is_not_found_over_http(tenant_server):
    server, _ = tenant_server
    job_id = submit_as(server.url, KEY_A, sample_variant())["id"]
    for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/events"):
        answer = requests.get(
            server.url + path, headers={"Authorization": f"Bearer {KEY_B}"}, timeout=10
        )
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "job_not_found"
    finished_as(server.url, KEY_A, job_id)


def test_a_global_cache_scope_is_one_index_for_every_key():
    assert cache_scope("global", "key_a") == cache_scope("global", "key_b") == GLOBAL_SCOPE
    assert cache_scope("tenant", "key_a") != cache_scope("tenant", "key_b")
