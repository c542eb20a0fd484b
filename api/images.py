"""Decoding and normalising uploads: what the API does to a photo before it is queued.

What goes in: JPEG (an MPO's primary picture, a JPEG with trailing bytes such as
a motion photo's video), PNG, WebP, GIF, BMP, TIFF, HEIC/HEIF (pillow-heif) and
AVIF. An animated or multi-frame file (GIF, WebP, APNG, multi-page TIFF) gives
its first frame. What comes out: upright (EXIF orientation, all eight values),
8-bit (16-bit and float images scaled, not clipped), sRGB (an embedded ICC
profile converted with Little CMS), RGB on white, its long side capped. Only
pixels survive: no EXIF, GPS, XMP or profile reaches a result.
"""

from __future__ import annotations

import io
import logging
import math
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

import numpy as np
import numpy.typing as npt
import pillow_heif
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from shared.errors import (
    ImageTooLarge,
    ImageTooSmall,
    ImageTooThin,
    InvalidImage,
    ServiceBusy,
    UnsupportedMediaType,
)

logger = logging.getLogger(__name__)

pillow_heif.register_heif_opener()

#: Pillow format names cutfx takes, and how they are called in messages.
ACCEPTED_FORMATS = {
    "JPEG": "JPEG",
    "MPO": "JPEG (MPO)",
    "PNG": "PNG",
    "WEBP": "WebP",
    "GIF": "GIF",
    "BMP": "BMP",
    "TIFF": "TIFF",
    "HEIF": "HEIC/HEIF",
    "AVIF": "AVIF",
}
#: The shortest side cutfx takes: below it there is no subject to cut out.
MIN_SIDE = 32
#: The longest side may be at most this many times the shortest (a 20000×1 strip is no photo).
MAX_ASPECT_RATIO = 20
WHITE = (255, 255, 255)
SRGB = ImageCms.createProfile("sRGB")
#: Pillow's modes of more than 8 bits per sample, read as greyscale numbers.
WIDE_GREY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
SIXTEEN_BIT_MAX = 65535


@dataclass(frozen=True)
class UploadPart:
    """Which multipart part an image came in, as its errors name it."""

    field: str
    noun: str


PHOTO = UploadPart("image", "image")
BACKGROUND = UploadPart("background_image", "background image")


@dataclass(frozen=True)
class NormalisedImage:
    """An upload turned upright, 8-bit sRGB RGB, its long side capped."""

    pixels: npt.NDArray[np.uint8]
    source_width: int
    source_height: int

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])


def normalise_upload(
    data: bytes, max_pixels: int, max_side: int, part: UploadPart = PHOTO
) -> NormalisedImage:
    image = _open(data, part)
    width, height = image.size
    check_dimensions(width, height, max_pixels, part)
    _draft(image, max_side)
    _decode(image, part)
    profile = image.info.get("icc_profile")
    upright = ImageOps.exif_transpose(image) or image
    rgb = _flatten_to_rgb(to_srgb(to_eight_bit(upright), profile))
    if max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return NormalisedImage(np.asarray(rgb, dtype=np.uint8), width, height)


def check_dimensions(width: int, height: int, max_pixels: int, part: UploadPart = PHOTO) -> None:
    """Refuse, before decoding, what is too big to decode or too small or thin to process."""
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"the {part.noun} has {width}×{height} = {width * height} pixels; "
            f"the limit is {max_pixels}",
            field=part.field,
        )
    if min(width, height) < MIN_SIDE:
        raise ImageTooSmall(
            f"the {part.noun} is {width}×{height}; each side must be at least {MIN_SIDE} pixels",
            field=part.field,
        )
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ImageTooThin(
            f"the {part.noun} is {width}×{height}; the long side may be at most "
            f"{MAX_ASPECT_RATIO} times the short one",
            field=part.field,
        )


def _draft(image: Image.Image, max_side: int) -> None:
    """Let a JPEG decode straight at a reduced scale (1/2, 1/4, 1/8) no smaller than the
    working size: a 48 MP photo then costs a fraction of its full decode's time and memory."""
    long_side = max(image.size)
    if image.format not in ("JPEG", "MPO") or long_side <= max_side:
        return
    scale = max_side / long_side
    image.draft(image.mode, (math.ceil(image.width * scale), math.ceil(image.height * scale)))


def _open(data: bytes, part: UploadPart) -> Image.Image:
    if not data:
        raise InvalidImage("the uploaded file is empty", field=part.field)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise UnsupportedMediaType(
            _accepted_message("the upload is not an image"), field=part.field
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLarge(f"the {part.noun} has too many pixels", field=part.field) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImage(f"the {part.noun} could not be read: {exc}", field=part.field) from None
    if image.format not in ACCEPTED_FORMATS:
        raise UnsupportedMediaType(
            _accepted_message(f"{image.format} images are not supported"), field=part.field
        )
    return image


def _decode(image: Image.Image, part: UploadPart) -> None:
    """Decode the first frame (an MPO's primary picture, an animation's first frame)."""
    try:
        image.seek(0)
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImage(
            f"the {part.noun} could not be decoded: {exc}", field=part.field
        ) from None


def to_eight_bit(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit greyscale scaled to 8 bits over their range; float images read as
    0–1 (or as 8- or 16-bit numbers when larger). Other modes are 8-bit already."""
    if image.mode in WIDE_GREY_MODES:
        values = np.asarray(image, dtype=np.float64)
        peak = float(values.max()) if values.size else 0.0
        scale = 255.0 / SIXTEEN_BIT_MAX if peak > 255 else 1.0
        return _grey_from(values * scale)
    if image.mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0)
        peak = float(values.max()) if values.size else 0.0
        if peak <= 1.0:
            scale = 255.0
        elif peak <= 255.0:
            scale = 1.0
        else:
            scale = 255.0 / SIXTEEN_BIT_MAX
        return _grey_from(values * scale)
    return image


def _grey_from(values: npt.NDArray[np.float64]) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")


def to_srgb(image: Image.Image, icc_profile: bytes | None) -> Image.Image:
    """The image in sRGB: an embedded profile (Display P3, Adobe RGB, CMYK, grey) is
    converted with Little CMS; alpha is kept. Without a profile, sRGB is assumed."""
    if not icc_profile:
        return image
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    alpha = image.getchannel("A") if image.mode in ("RGBA", "LA") else None
    colour = image.convert({"RGBA": "RGB", "LA": "L"}.get(image.mode, image.mode))
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        converted = ImageCms.profileToProfile(colour, source, SRGB, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError) as exc:
        # A broken or mismatched profile costs colour accuracy, not the job.
        logger.warning("embedded colour profile ignored", extra={"reason": str(exc)})
        return image
    if converted is None:
        return image
    if alpha is not None:
        converted.putalpha(alpha)
    return converted


def _flatten_to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, WHITE)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def _accepted_message(reason: str) -> str:
    return f"{reason}; send one of {', '.join(ACCEPTED_FORMATS.values())}"


# Upload decoding off the event loop, a bounded number at a time per API process.
#
# The API serves requests and event streams on gevent: one CPU-bound decode run
# on the loop freezes every other request of the process. Decoding therefore runs
# on gevent's pool of real threads (Pillow releases the GIL while it decodes),
# and at most `limit` at once. A submit waits up to SLOT_WAIT_S for a slot (its
# greenlet waits; the loop does not), then is a 503 with Retry-After.
# Outside gevent (tests, the development server) it runs in the calling thread.

#: How soon a client turned away by a full decode pool should try again.
BUSY_RETRY_AFTER_S = 2
#: How long a submit waits for a decode slot before it is turned away.
SLOT_WAIT_S = 10.0

P = ParamSpec("P")
T = TypeVar("T")


def _gevent_patched() -> bool:
    try:
        from gevent import monkey
    except ImportError:
        return False
    return bool(monkey.is_module_patched("socket"))


class DecodePool:
    def __init__(self, limit: int, slot_wait_s: float = SLOT_WAIT_S) -> None:
        self.limit = limit
        self.slot_wait_s = slot_wait_s
        self._slots = threading.BoundedSemaphore(limit)

    def run(self, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if not self._slots.acquire(timeout=self.slot_wait_s):
            raise ServiceBusy(
                f"this server is decoding {self.limit} uploads already; retry shortly",
                retry_after_s=BUSY_RETRY_AFTER_S,
            )
        try:
            if _gevent_patched():
                import gevent

                return gevent.get_hub().threadpool.apply(work, args, kwargs)  # type: ignore[no-any-return]
            return work(*args, **kwargs)
        finally:
            self._slots.release()
