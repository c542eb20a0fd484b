from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from api.images import normalise_upload
from shared.errors import ImageTooLarge, InvalidImage, UnsupportedMediaType
from tests.helpers import image_bytes


def test_rgba_uploads_are_flattened_on_white():
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, "PNG")
    image = normalise_upload(buffer.getvalue(), 10_000, 100)
    assert (image.pixels == 255).all()


def test_long_side_is_capped_keeping_the_aspect():
    image = normalise_upload(image_bytes(400, 100), 1_000_000, 200)
    assert (image.width, image.height) == (200, 50)
    assert (image.source_width, image.source_height) == (400, 100)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"GIF89a" + b"\x00" * 20, UnsupportedMediaType),
        (b"%PDF-1.4 not an image", UnsupportedMediaType),
        (image_bytes(fmt="PNG")[:60], InvalidImage),
    ],
)
def test_bad_bytes(data, error):
    with pytest.raises(error):
        normalise_upload(data, 1_000_000, 100)


def test_pixel_limit_is_checked_before_decoding():
    with pytest.raises(ImageTooLarge):
        normalise_upload(image_bytes(100, 100), 9_999, 1000)


def test_a_large_jpeg_decodes_at_a_reduced_scale_yet_reaches_the_working_size():
    import io

    import numpy as np
    from PIL import Image

    pixels = np.zeros((3000, 6000, 3), dtype=np.uint8)
    pixels[:, :3000] = (200, 40, 40)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    normalised = normalise_upload(buffer.getvalue(), max_pixels=40_000_000, max_side=1024)
    assert (normalised.width, normalised.height) == (1024, 512)
    left = normalised.pixels[:, :400].reshape(-1, 3).mean(axis=0)
    assert abs(left[0] - 200) < 6
    assert abs(left[1] - 40) < 6


def test_the_draft_picks_the_smallest_jpeg_scale_that_still_covers_the_working_size():
    import io

    import numpy as np
    from PIL import Image

    from api.images import _draft

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((3000, 6000, 3), dtype=np.uint8)).save(buffer, "JPEG")
    image = Image.open(io.BytesIO(buffer.getvalue()))
    _draft(image, 1024)
    assert image.size == (1500, 750), "1/4 scale: 1/8 would be 750 wide, below 1024"
