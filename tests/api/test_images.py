from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageCms

from api.upload import normalise_upload
from shared.errors import (
    ImageTooLarge,
    ImageTooSmall,
    ImageTooThin,
    InvalidImage,
    UnsupportedMediaType,
)
from tests import icc
from tests.corpus import blank_png, pet
from tests.helpers import image_bytes


def test_rgba_uploads_are_flattened_on_white():
    rgba = np.zeros((40, 40, 4), dtype=np.uint8)
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
        (b'<svg xmlns="http://www.w3.org/2000/svg"/>', UnsupportedMediaType),
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

    from api.upload import _draft

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((3000, 6000, 3), dtype=np.uint8)).save(buffer, "JPEG")
    image = Image.open(io.BytesIO(buffer.getvalue()))
    _draft(image, 1024)
    assert image.size == (1500, 750), "1/4 scale: 1/8 would be 750 wide, below 1024"


def test_a_tiny_image_is_refused_before_anything_runs():
    with pytest.raises(ImageTooSmall):
        normalise_upload(blank_png(40, 1)(), 1_000_000, 100)
    with pytest.raises(ImageTooThin):
        normalise_upload(image_bytes(700, 33), 1_000_000, 2048)


def test_sixteen_bit_grey_is_scaled_not_clipped():
    ramp = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, "PNG")
    image = normalise_upload(buffer.getvalue(), 1_000_000, 1000)
    assert abs(image.pixels.mean() - 127.5) < 1, "a mid-grey ramp stays mid-grey"
    assert image.pixels.min() == 0
    assert image.pixels.max() == 255


def test_float_images_are_read_as_zero_to_one():
    ramp = np.linspace(0, 1, 64 * 48).reshape(48, 64).astype(np.float32)
    buffer = io.BytesIO()
    Image.fromarray(ramp, "F").save(buffer, "TIFF")
    image = normalise_upload(buffer.getvalue(), 1_000_000, 1000)
    assert abs(image.pixels.mean() - 127.5) < 1


def _marked() -> np.ndarray:
    """An asymmetric picture: which way up it is shows in where the red corner lands."""
    pixels = np.zeros((40, 60, 3), dtype=np.uint8)
    pixels[:10, :10] = (255, 0, 0)
    return pixels


#: What each EXIF orientation asks a viewer to do to the stored pixels (EXIF 2.3, 4.6.4).
UPRIGHT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: a[::-1, ::-1],  # turned 180°
    4: lambda a: a[::-1, :],  # mirrored top-bottom
    5: lambda a: a.transpose(1, 0, 2),  # mirrored along the main diagonal
    6: lambda a: np.rot90(a, k=-1),  # turned 90° clockwise
    7: lambda a: np.rot90(a, k=2).transpose(1, 0, 2),  # mirrored along the other diagonal
    8: lambda a: np.rot90(a, k=1),  # turned 90° counter-clockwise
}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_turns_the_photo_upright(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(_marked()).save(buffer, "PNG", exif=exif.tobytes())
    image = normalise_upload(buffer.getvalue(), 1_000_000, 1000)
    assert np.array_equal(image.pixels, UPRIGHT[orientation](_marked()))


def test_a_display_p3_photo_is_converted_to_srgb_as_little_cms_converts_it():
    pixels = pet()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG", icc_profile=icc.display_p3())
    image = normalise_upload(buffer.getvalue(), 1_000_000, 1000)
    p3 = ImageCms.ImageCmsProfile(io.BytesIO(icc.display_p3()))
    expected = ImageCms.profileToProfile(
        Image.fromarray(pixels), p3, ImageCms.createProfile("sRGB"), outputMode="RGB"
    )
    assert np.array_equal(image.pixels, np.asarray(expected))
    assert not np.array_equal(image.pixels, pixels), "the profile changed the colours"


def test_an_adobe_rgb_photo_with_alpha_keeps_its_alpha_through_conversion():
    pixels = np.dstack([pet(), np.full(pet().shape[:2], 255, np.uint8)])
    pixels[:8, :8, 3] = 0
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGBA").save(buffer, "PNG", icc_profile=icc.adobe_rgb())
    image = normalise_upload(buffer.getvalue(), 1_000_000, 1000)
    assert (image.pixels[:8, :8] == 255).all(), "transparent stays white after flattening"


def test_an_mpo_gives_its_primary_picture_and_animations_their_first_frame():
    first, second = (pet(seed=1), np.full_like(pet(), 30))
    for fmt, options in (
        ("MPO", {}),
        ("GIF", {"duration": 100}),
        ("WEBP", {"lossless": True}),
        ("PNG", {}),
        ("TIFF", {}),
    ):
        buffer = io.BytesIO()
        Image.fromarray(first).save(
            buffer, fmt, save_all=True, append_images=[Image.fromarray(second)], **options
        )
        image = normalise_upload(buffer.getvalue(), 1_000_000, 1000)
        assert abs(float(image.pixels.mean()) - float(first.mean())) < 8, fmt


def test_heic_and_avif_are_decoded():
    for fmt in ("HEIF", "AVIF"):
        buffer = io.BytesIO()
        Image.fromarray(pet()).save(buffer, fmt, quality=95)
        image = normalise_upload(buffer.getvalue(), 1_000_000, 1000)
        assert (image.width, image.height) == (pet().shape[1], pet().shape[0])
        assert abs(float(image.pixels.mean()) - float(pet().mean())) < 4, fmt


def test_results_carry_an_srgb_profile_and_nothing_else():
    from shared.output import SRGB_ICC, OutputFormat, encode_rgba

    rgba = np.dstack([pet(), np.full(pet().shape[:2], 255, np.uint8)])
    for name in ("webp", "png", "jpeg"):
        result = Image.open(
            io.BytesIO(encode_rgba(rgba, OutputFormat(name, 90 if name != "png" else None)))
        )
        assert result.info.get("icc_profile") == SRGB_ICC, name
        assert not result.getexif(), name
        assert "xmp" not in result.info, name
        assert "XML:com.adobe.xmp" not in result.info, name
