"""Decoding and normalising uploads: what the API does to a photo before it is queued."""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from shared.errors import ImageTooLarge, InvalidImage, UnsupportedMediaType

#: Pillow format names cutfx takes, and how they are called in messages.
ACCEPTED_FORMATS = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP", "BMP": "BMP", "TIFF": "TIFF"}
WHITE = (255, 255, 255)


@dataclass(frozen=True)
class NormalisedImage:
    """An upload turned upright, RGB, its long side capped."""

    pixels: npt.NDArray[np.uint8]
    source_width: int
    source_height: int

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])


def normalise_upload(data: bytes, max_pixels: int, max_side: int) -> NormalisedImage:
    image = _open(data)
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"the image has {width}×{height} = {width * height} pixels; the limit is {max_pixels}",
            field="image",
        )
    _draft(image, max_side)
    _decode(image)
    upright = ImageOps.exif_transpose(image) or image
    rgb = _flatten_to_rgb(upright)
    if max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return NormalisedImage(np.asarray(rgb, dtype=np.uint8), width, height)


def _draft(image: Image.Image, max_side: int) -> None:
    """Let a JPEG decode straight at a reduced scale (1/2, 1/4, 1/8) no smaller than the
    working size: a 48 MP photo then costs a fraction of its full decode's time and memory."""
    long_side = max(image.size)
    if image.format != "JPEG" or long_side <= max_side:
        return
    scale = max_side / long_side
    image.draft(image.mode, (math.ceil(image.width * scale), math.ceil(image.height * scale)))


def _open(data: bytes) -> Image.Image:
    if not data:
        raise InvalidImage("the uploaded file is empty", field="image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise UnsupportedMediaType(
            _accepted_message("the upload is not an image"), field="image"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLarge("the image has too many pixels", field="image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(f"the image could not be read: {exc}", field="image") from None
    if image.format not in ACCEPTED_FORMATS:
        raise UnsupportedMediaType(
            _accepted_message(f"{image.format} images are not supported"), field="image"
        )
    return image


def _decode(image: Image.Image) -> None:
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(f"the image could not be decoded: {exc}", field="image") from None


def _flatten_to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, WHITE)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def _accepted_message(reason: str) -> str:
    return f"{reason}; send one of {', '.join(ACCEPTED_FORMATS.values())}"
