"""Output options through the real API, workers and storage: backgrounds, crops, sizes, the
mask alone, the subject's box, and re-styling that never runs the model again."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from shared.telemetry import MODEL_INFERENCES, TASKS, Metrics
from tests.helpers import SAMPLE, decode, image_bytes, sample_variant, submit, wait_finished

pytestmark = pytest.mark.e2e

SAMPLE_SIZE = Image.open(SAMPLE).size


@pytest.fixture
def metrics(e2e_app):
    return Metrics(e2e_app.extensions["cutfx"].redis)


def finished(client, photo: bytes, **form: Any) -> dict[str, Any]:
    answer = submit(client, photo, **form)
    assert answer.status_code == 202, answer.get_json()
    return wait_finished(client, answer.get_json()["id"])


def pixels_of(client, result: dict[str, Any]) -> np.ndarray:
    return np.asarray(decode(client.get(result["url"]).data))


def test_a_colour_background_crop_and_size_shape_every_result(e2e_client):
    job = finished(
        e2e_client,
        sample_variant(),
        effects="color,popart",
        background="#ff0000",
        crop="true",
        crop_margin="5%",
        size="200",
        format="png",
    )
    assert job["status"] == "succeeded"
    assert job["options"] == {
        "background": "#ff0000ff",
        "crop": True,
        "crop_margin": "5%",
        "size": "200",
    }
    for name in ("cutout", "color", "popart"):
        result = job["results"][name]
        assert max(result["width"], result["height"]) <= 200
        image = pixels_of(e2e_client, result)
        assert image.shape[2] == 4
        assert (image[..., 3] == 255).all(), f"{name}: the background is opaque"
        subject = result["subject"]
        assert subject["x"] >= 0
        assert subject["x"] + subject["width"] <= SAMPLE_SIZE[0]
        assert subject["y"] >= 0
        assert subject["y"] + subject["height"] <= SAMPLE_SIZE[1]
        assert 0 < subject["coverage"] <= 1


def test_a_blurred_or_uploaded_background_fills_the_frame(e2e_client):
    photo = sample_variant()
    blurred = finished(
        e2e_client, photo, effects="color", background="blur", background_blur="8", format="png"
    )
    assert blurred["status"] == "succeeded"
    assert blurred["options"] == {"background": "blur", "background_blur": 8}
    assert (pixels_of(e2e_client, blurred["results"]["color"])[..., 3] == 255).all()

    backdrop = image_bytes(80, 60, seed=4)
    answer = e2e_client.post(
        "/v1/jobs",
        data={
            "image": (io.BytesIO(photo), "pet.png"),
            "background_image": (io.BytesIO(backdrop), "beach.png"),
            "effects": "color",
            "format": "png",
        },
        content_type="multipart/form-data",
    )
    assert answer.status_code == 202, answer.get_json()
    covered = wait_finished(e2e_client, answer.get_json()["id"])
    assert covered["options"] == {"background": "image"}
    image = pixels_of(e2e_client, covered["results"]["color"])
    assert image.shape[:2] == (SAMPLE_SIZE[1], SAMPLE_SIZE[0])
    assert (image[..., 3] == 255).all()


def test_channels_alpha_gives_the_mask_of_the_cutout_alone(e2e_client):
    photo = sample_variant()
    plain = finished(e2e_client, photo, effects="color", format="png")
    mask_job = finished(e2e_client, photo, effects="color", format="png", channels="alpha")
    mask = pixels_of(e2e_client, mask_job["results"]["cutout"])
    cutout = pixels_of(e2e_client, plain["results"]["cutout"])
    assert mask.ndim == 2, "a greyscale image"
    assert np.array_equal(mask, cutout[..., 3])
    assert pixels_of(e2e_client, mask_job["results"]["color"]).shape[2] == 4, "effects stay RGBA"


def test_restyling_runs_no_model_and_a_repeat_finishes_in_the_202(e2e_client, metrics):
    photo = sample_variant()
    assert finished(e2e_client, photo)["status"] == "succeeded"
    inferences = metrics.counter_value(MODEL_INFERENCES)
    segments = metrics.counter_value(TASKS, {"task": "cutfx.segment"})

    restyled = finished(e2e_client, photo, background="#ffffff", crop="true", size="preview")
    assert restyled["status"] == "succeeded"
    assert restyled["results"]["cutout"]["cached"], "the cutout came from the cached mask"
    assert not any(restyled["results"][name]["cached"] for name in restyled["effects"])
    assert metrics.counter_value(MODEL_INFERENCES) == inferences, "no inference for a re-style"

    again = submit(e2e_client, photo, background="#ffffff", crop="true", size="preview")
    assert again.get_json()["status"] == "succeeded", "finished in the 202 answer"
    assert all(result["cached"] for result in again.get_json()["results"].values())
    assert metrics.counter_value(MODEL_INFERENCES) == inferences
    assert metrics.counter_value(TASKS, {"task": "cutfx.segment"}) <= segments + 1
