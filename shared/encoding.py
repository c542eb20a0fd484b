"""Encoding results for clients: WebP, PNG or JPEG, with settings chosen on purpose."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageCms

#: format name → (MIME type, file extension, default quality or None)
OUTPUT_FORMATS: dict[str, tuple[str, str, int | None]] = {
    "webp": ("image/webp", "webp", 85),
    "png": ("image/png", "png", None),
    "jpeg": ("image/jpeg", "jpg", 90),
}
DEFAULT_OUTPUT_FORMAT = "webp"
# method=0: ~47 ms and ~95 KB a megapixel; method 2 costs 2.5× the time for ~25% fewer
# bytes, and encoding, not effects, is the bigger CPU cost of a job (bench/RESULTS.md).
WEBP_METHOD = 0
# Results are downloaded many times: level 6 buys ~15% fewer bytes than 1 for 4× the time.
PNG_COMPRESS_LEVEL = 6
# Lossless intermediates (the stored input and cutout) are read back at once: speed wins.
INTERMEDIATE_PNG_COMPRESS_LEVEL = 1
JPEG_BACKGROUND = (255, 255, 255)
#: Where an ICC header keeps its creation time, and its MD5 profile id (ICC.1:2010, 7.2).
_ICC_DATE = slice(24, 36)
_ICC_PROFILE_ID = slice(84, 100)


def _reproducible_srgb_profile() -> bytes:
    """Little CMS's sRGB profile without its creation time (and so without the id that
    hashes it): the same bytes in every process, so re-encoding a result repeats it."""
    profile = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    profile[_ICC_DATE] = bytes(12)
    profile[_ICC_PROFILE_ID] = bytes(16)  # all zero: "not computed", as ICC allows
    return bytes(profile)


#: Every encoded image says it is sRGB (uploads are converted to it), so viewers
#: show the colours as computed. The profile is the only metadata a result carries.
SRGB_ICC = _reproducible_srgb_profile()


@dataclass(frozen=True)
class OutputFormat:
    name: str = DEFAULT_OUTPUT_FORMAT
    quality: int | None = OUTPUT_FORMATS[DEFAULT_OUTPUT_FORMAT][2]

    @property
    def content_type(self) -> str:
        return OUTPUT_FORMATS[self.name][0]

    @property
    def extension(self) -> str:
        return OUTPUT_FORMATS[self.name][1]


def encode_rgba(
    rgba: npt.NDArray[np.uint8], output: OutputFormat, flat_colours: bool = False
) -> bytes:
    """Encode a result, RGBA or (a mask) greyscale; flat-colour images become lossless WebP
    (bench/RESULTS.md, encoders)."""
    image = Image.fromarray(rgba, "L" if rgba.ndim == 2 else "RGBA")
    buffer = io.BytesIO()
    if image.mode == "L" and output.name == "jpeg":
        image.save(buffer, "JPEG", quality=output.quality, optimize=False, icc_profile=SRGB_ICC)
        return buffer.getvalue()
    if output.name == "webp" and flat_colours:
        image.save(
            buffer, "WEBP", lossless=True, quality=0, method=WEBP_METHOD, icc_profile=SRGB_ICC
        )
    elif output.name == "webp":
        image.save(buffer, "WEBP", quality=output.quality, method=WEBP_METHOD, icc_profile=SRGB_ICC)
    elif output.name == "png":
        image.save(buffer, "PNG", compress_level=PNG_COMPRESS_LEVEL, icc_profile=SRGB_ICC)
    else:
        flat = Image.new("RGB", image.size, JPEG_BACKGROUND)
        flat.paste(image, mask=image.getchannel("A"))
        flat.save(buffer, "JPEG", quality=output.quality, optimize=False, icc_profile=SRGB_ICC)
    return buffer.getvalue()


def encode_lossless(pixels: npt.NDArray[np.uint8]) -> bytes:
    """PNG for intermediates: the normalised input (RGB) and the cutout (RGBA)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(
        buffer, "PNG", compress_level=INTERMEDIATE_PNG_COMPRESS_LEVEL, icc_profile=SRGB_ICC
    )
    return buffer.getvalue()


def decode_lossless(data: bytes) -> npt.NDArray[np.uint8]:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert(image.mode)).copy()
