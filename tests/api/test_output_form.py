"""The output options of a submit, validated at the API: every bad value names its field."""

from __future__ import annotations

import io

import pytest

from tests.api.test_submit import assert_nothing_queued
from tests.helpers import image_bytes, submit


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"background": "red"}, "background"),
        ({"background": "#ff00"}, "background"),
        ({"background": "image"}, "background_image"),
        ({"background_blur": "5"}, "background_blur"),
        ({"background": "blur", "background_blur": "0"}, "background_blur"),
        ({"background": "blur", "background_blur": "500"}, "background_blur"),
        ({"crop": "maybe"}, "crop"),
        ({"crop_margin": "10"}, "crop_margin"),
        ({"crop": "true", "crop_margin": "-3"}, "crop_margin"),
        ({"crop": "true", "crop_margin": "300%"}, "crop_margin"),
        ({"crop": "true", "crop_margin": "1.5px"}, "crop_margin"),
        ({"size": "huge"}, "size"),
        ({"size": "8"}, "size"),
        ({"size": "99999"}, "size"),
        ({"channels": "rgb"}, "channels"),
        ({"backgroud": "#ffffff"}, "backgroud"),
        ({"shadow": "true"}, "shadow"),
    ],
)
def test_a_bad_output_option_is_a_422_naming_it(client, form, field):
    answer = submit(client, image_bytes(), **form)
    assert answer.status_code == 422, answer.get_json()
    assert answer.get_json()["error"]["field"] == field


def submit_with_parts(client, parts: dict[str, bytes], **form: str):
    files = {name: (io.BytesIO(data), f"{name}.png") for name, data in parts.items()}
    return client.post(
        "/v1/jobs",
        data={"image": (io.BytesIO(image_bytes()), "a.png"), **files, **form},
        content_type="multipart/form-data",
    )


def test_an_unknown_file_part_is_a_422_naming_it(client):
    answer = submit_with_parts(client, {"mask": b"x"})
    assert answer.status_code == 422
    assert answer.get_json()["error"]["field"] == "mask"


def test_a_background_image_and_another_background_conflict(client):
    answer = submit_with_parts(
        client, {"background_image": image_bytes(seed=2)}, background="#ffffff"
    )
    assert answer.status_code == 422
    assert answer.get_json()["error"]["field"] == "background"


def test_a_broken_background_image_is_refused_and_queues_nothing(client, redis_client):
    answer = submit_with_parts(client, {"background_image": b"not an image"})
    assert answer.status_code == 415
    assert answer.get_json()["error"]["field"] == "background_image"
    assert_nothing_queued(redis_client)


def test_a_tiny_background_image_names_its_own_field(client):
    answer = submit_with_parts(client, {"background_image": image_bytes(20, 20)})
    assert answer.status_code == 422
    error = answer.get_json()["error"]
    assert error["field"] == "background_image"
    assert error["message"].startswith("the background image is 20×20")


@pytest.mark.parametrize(
    ("form", "shown"),
    [
        ({"background": "#FFFFFF"}, {"background": "#ffffffff"}),
        ({"background": "transparent"}, {}),
        ({"crop": "yes", "crop_margin": "12"}, {"crop": True, "crop_margin": "12px"}),
        ({"crop": "1", "crop_margin": "7.5%"}, {"crop": True, "crop_margin": "7.5%"}),
        ({"size": "preview", "channels": "ALPHA"}, {"size": "preview", "channels": "alpha"}),
        ({"size": "full", "channels": "rgba", "crop": "false"}, {}),
    ],
)
def test_options_are_kept_in_canonical_form(client, form, shown):
    answer = submit(client, image_bytes(), **form)
    assert answer.status_code == 202, answer.get_json()
    job = client.get(f"/v1/jobs/{answer.get_json()['id']}").get_json()
    assert job["options"] == shown
