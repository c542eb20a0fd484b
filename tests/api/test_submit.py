"""POST /v1/jobs: what is accepted, what is refused, and that a refusal queues nothing."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from shared.jobs.store import KEY_PREFIX
from shared.queues import QUEUE_GPU
from tests.helpers import image_bytes, submit


def queued_messages(redis_client) -> int:
    return sum(redis_client.llen(key) for key in redis_client.scan_iter(f"{QUEUE_GPU}*"))


def assert_nothing_queued(redis_client) -> None:
    assert queued_messages(redis_client) == 0
    assert list(redis_client.scan_iter(f"{KEY_PREFIX}*")) == []


def assert_error(response, status: int, code: str, field: str | None = None) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == code
    assert error["message"]
    if field is not None:
        assert error["field"] == field
    assert "Traceback" not in response.get_data(as_text=True)


def test_a_good_upload_is_queued_at_once(client, redis_client):
    response = submit(client, image_bytes(), primary="popart")
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "queued"
    assert response.headers["Location"] == body["links"]["self"]
    assert body["links"]["events"].endswith(f"/v1/jobs/{body['id']}/events")
    assert queued_messages(redis_client) == 1
    job = client.get(f"/v1/jobs/{body['id']}").get_json()
    assert job["effects"] == ["popart", "color", "enhancedblackwhite", "dithering"]
    assert set(job["results"]) == {"cutout", "color", "enhancedblackwhite", "popart", "dithering"}
    assert all(result["status"] == "pending" for result in job["results"].values())
    assert "url" not in job["results"]["cutout"]


def test_the_broker_message_carries_ids_not_bytes(client, redis_client):
    body = submit(client, image_bytes(256, 256)).get_json()
    (key,) = [k for k in redis_client.scan_iter(f"{QUEUE_GPU}*") if redis_client.llen(k)]
    message = redis_client.lindex(key, 0)
    assert len(message) < 4000
    assert body["id"].encode() in message


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"this is not an image", 415, "unsupported_media_type"),
        (b"", 400, "invalid_image"),
        (image_bytes(fmt="JPEG")[:300], 400, "invalid_image"),
        (image_bytes(fmt="ICO"), 415, "unsupported_media_type"),
    ],
    ids=["text", "empty", "truncated-jpeg", "ico"],
)
def test_broken_uploads_are_refused_and_nothing_is_queued(client, redis_client, data, status, code):
    assert_error(submit(client, data), status, code, field="image")
    assert_nothing_queued(redis_client)


def test_missing_image_field(client, redis_client):
    response = client.post(
        "/v1/jobs", data={"effects": "color"}, content_type="multipart/form-data"
    )
    assert_error(response, 400, "malformed_request", field="image")
    assert_nothing_queued(redis_client)


def test_too_many_pixels(settings, redis_client):
    from api import create_app

    small = create_app(
        {"TESTING": True, "CUTFX_SETTINGS": settings.with_overrides(max_pixels=1000)}
    ).test_client()
    assert_error(submit(small, image_bytes(50, 50)), 413, "image_too_large", field="image")
    assert_nothing_queued(redis_client)


def test_too_many_bytes(client, redis_client, settings):
    too_big = b"\x89PNG" + b"0" * (settings.max_upload_bytes + 200_000)
    assert_error(submit(client, too_big), 413, "payload_too_large")
    assert_nothing_queued(redis_client)


@pytest.mark.parametrize(
    ("form", "status", "code", "field"),
    [
        ({"effects": "color,sepia"}, 422, "unknown_effect", "effects"),
        ({"effects": " , "}, 422, "invalid_parameter", "effects"),
        ({"primary": "popart", "effects": "color"}, 422, "invalid_parameter", "primary"),
        ({"format": "gif"}, 422, "invalid_parameter", "format"),
        ({"quality": "0"}, 422, "invalid_parameter", "quality"),
        ({"quality": "high"}, 422, "invalid_parameter", "quality"),
        ({"params": "{not json"}, 400, "malformed_request", "params"),
        ({"params": "[1, 2]"}, 400, "malformed_request", "params"),
        (
            {"params": json.dumps({"popart": {"contrast": 99}})},
            422,
            "invalid_parameter",
            "params.popart.contrast",
        ),
        (
            {"params": json.dumps({"popart": {"glitter": 1}})},
            422,
            "invalid_parameter",
            "params.popart.glitter",
        ),
        (
            {"effects": "color", "params": json.dumps({"popart": {}})},
            422,
            "invalid_parameter",
            "params",
        ),
    ],
)
def test_bad_options_are_422_with_the_field(client, redis_client, form, status, code, field):
    assert_error(submit(client, image_bytes(), **form), status, code, field=field)
    assert_nothing_queued(redis_client)


def test_options_are_recorded(client):
    body = submit(
        client,
        image_bytes(),
        effects="dithering,color",
        format="png",
        quality="50",
        params=json.dumps({"dithering": {"pixel_spacing": 3}}),
    ).get_json()
    job = client.get(f"/v1/jobs/{body['id']}").get_json()
    assert job["effects"] == ["dithering", "color"]
    assert job["primary"] == "dithering"
    assert job["format"] == "png"
    assert job["quality"] is None, "quality means nothing for PNG"


def test_exif_orientation_is_applied_and_the_long_side_capped(app, client):
    settings = app.extensions["cutfx"].settings
    rotated = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when shown
    Image.new("RGB", (settings.max_side + 400, 400), "red").save(rotated, "JPEG", exif=exif)
    body = submit(client, rotated.getvalue(), "photo.jpg").get_json()
    job = client.get(f"/v1/jobs/{body['id']}").get_json()
    assert job["input"]["width"] < job["input"]["height"], "EXIF rotation was applied"
    assert max(job["input"]["width"], job["input"]["height"]) == settings.max_side


def test_unknown_job_is_404_in_the_error_shape(client):
    assert_error(client.get("/v1/jobs/nope"), 404, "job_not_found")


def test_unknown_route_is_404_in_the_error_shape(client):
    assert_error(client.get("/v2/whatever"), 404, "not_found")


def test_api_keys_are_enforced_when_configured(settings, redis_client):
    from api import create_app

    keyed = create_app(
        {"TESTING": True, "CUTFX_SETTINGS": settings.with_overrides(api_keys=("k1",))}
    ).test_client()
    assert_error(submit(keyed, image_bytes()), 401, "unauthorized")
    response = keyed.post(
        "/v1/jobs",
        data={"image": (io.BytesIO(image_bytes()), "a.png")},
        headers={"Authorization": "Bearer k1"},
    )
    assert response.status_code == 202
    assert keyed.get("/v1/effects").status_code == 200
