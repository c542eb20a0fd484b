"""Idempotency-Key on POST /v1/jobs (no worker needed: the job is only queued)."""

from __future__ import annotations

import io

from shared.queues import QUEUE_GPU
from tests.helpers import image_bytes


def post(client, data: bytes, key: str | None, **form: str):
    headers = {"Idempotency-Key": key} if key is not None else {}
    payload = {"image": (io.BytesIO(data), "photo.png"), **form}
    return client.post(
        "/v1/jobs", data=payload, headers=headers, content_type="multipart/form-data"
    )


def queued(redis_client) -> int:
    return sum(redis_client.llen(k) for k in redis_client.scan_iter(f"{QUEUE_GPU}*"))


def test_the_same_key_and_request_return_the_same_job_once(client, redis_client):
    photo = image_bytes(seed=1)
    first = post(client, photo, "order-42")
    second = post(client, photo, "order-42")
    assert first.status_code == second.status_code == 202
    assert first.get_json()["id"] == second.get_json()["id"]
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert queued(redis_client) == 1, "the repeat did no new work"


def test_the_same_key_with_another_request_is_a_conflict(client, redis_client):
    post(client, image_bytes(seed=1), "order-43")
    other_photo = post(client, image_bytes(seed=2), "order-43")
    assert other_photo.status_code == 409
    assert other_photo.get_json()["error"]["code"] == "idempotency_conflict"
    other_options = post(client, image_bytes(seed=1), "order-43", effects="popart")
    assert other_options.status_code == 409
    assert queued(redis_client) == 1


def test_a_refused_request_does_not_burn_its_key(client):
    assert post(client, b"not an image", "order-44").status_code == 415
    assert post(client, image_bytes(), "order-44").status_code == 202


def test_keys_expire(client, redis_client, app):
    post(client, image_bytes(seed=1), "order-45")
    ttls = [redis_client.ttl(k) for k in redis_client.scan_iter("cutfx:idempotency:*")]
    assert ttls
    assert all(0 < ttl <= app.extensions["cutfx"].settings.idempotency_ttl_s for ttl in ttls)


def test_a_bad_key_is_refused(client):
    response = post(client, image_bytes(), "x" * 300)
    assert response.status_code == 400
    assert response.get_json()["error"]["field"] == "Idempotency-Key"
