"""resolution=original: the cutout and its effects at the upload's own size, the mask's edge
moved onto the photo's own by a guided upsample, the files at print resolution."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.helpers import decode, image_bytes, submit, wait_finished
from tests.worker.edges import bilinear, disc_scene, edge_error_px, network_mask
from worker.model import guided_upsample

#: The issue's figure: a 6000 × 4000 photo's edge within 2 px of the truth.
MAX_EDGE_ERROR_PX = 2.0


def test_the_guided_upsample_puts_the_edge_within_two_pixels_and_bilinear_does_not():
    scene = disc_scene(6000, 4000)
    low = network_mask(scene)
    guided = edge_error_px(scene, guided_upsample(low, scene.photo))
    plain = edge_error_px(scene, bilinear(low, 6000, 4000))
    assert guided <= MAX_EDGE_ERROR_PX, guided
    assert plain > MAX_EDGE_ERROR_PX, plain
    assert guided < plain / 2


def test_the_guided_upsample_keeps_a_flat_mask_flat():
    scene = disc_scene(600, 400)
    upsampled = guided_upsample(network_mask(scene) * 0 + 1, scene.photo)
    assert upsampled.shape == (400, 600)
    assert upsampled.min() > 0.999


def test_an_unknown_resolution_is_refused(client):
    answer = submit(client, image_bytes(), resolution="poster")
    assert answer.status_code == 422
    assert answer.get_json()["error"]["field"] == "resolution"


@pytest.mark.e2e
def test_an_original_resolution_job_is_made_at_the_photo_s_size_at_300_dpi(
    e2e_client, e2e_settings
):
    width, height = e2e_settings.max_side + 600, (e2e_settings.max_side + 600) * 2 // 3
    photo = image_bytes(width, height, fmt="JPEG", seed=29)
    standard = wait_finished(
        e2e_client, submit(e2e_client, photo, effects="color").get_json()["id"]
    )
    assert standard["results"]["color"]["width"] == e2e_settings.max_side
    full = wait_finished(
        e2e_client,
        submit(e2e_client, photo, effects="color", resolution="original").get_json()["id"],
    )
    assert full["status"] == "succeeded"
    assert full["input"] == {"width": width, "height": height, "resolution": "original"}
    assert not full["results"]["cutout"]["cached"], "not the standard job's cutout"
    for name in ("cutout", "color"):
        result = full["results"][name]
        assert (result["width"], result["height"]) == (width, height)
        data = e2e_client.get(result["url"].removeprefix("http://localhost")).data
        with Image.open(io.BytesIO(data)) as image:
            assert image.size == (width, height)
            assert image.getexif().get(0x011A) == 300, "webp: 300 dpi in its EXIF"
    assert decode(data).size == (width, height)
