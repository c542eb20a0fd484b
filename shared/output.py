"""What a client gets each result as: its format (WebP, PNG or JPEG, with settings chosen
on purpose) and its output options (background, crop, size, channels), and the encoders
that make its bytes.

Options are applied after the effect, as cheap renders from the cached cutout
(worker/render.py), so a photo re-styled with other options never runs the
model again. Their canonical form (only what differs from the defaults) is part
of each result's cache key.
"""

from __future__ import annotations

import io
import re
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageCms

#: A colour background as the client gives it: #rrggbb or #rrggbbaa.
COLOUR_PATTERN = re.compile(r"^#[0-9a-f]{6}([0-9a-f]{2})?$")
BLUR = "blur"
IMAGE = "image"
DEFAULT_BLUR_RADIUS = 20
BLUR_RADIUS_RANGE = (1, 100)
#: size presets: `full` keeps the photo's size, `preview` fits it in a quarter megapixel.
FULL = "full"
PREVIEW = "preview"
PREVIEW_PIXELS = 250_000
MAX_SIDE_RANGE = (16, 8192)
MARGIN_PATTERN = re.compile(r"^(\d+(?:\.\d+)?)(px|%)?$")
MAX_MARGIN_PX = 2000
MAX_MARGIN_PERCENT = 100.0
CHANNELS = ("rgba", "alpha")


@dataclass(frozen=True)
class OutputOptions:
    #: None (transparent), "#rrggbbaa", "blur" (the photo blurred) or "image" (an upload).
    background: str | None = None
    background_blur: int = DEFAULT_BLUR_RADIUS
    #: The stored key of the uploaded background (normalised like a photo) when "image".
    background_image: str | None = None
    crop: bool = False
    #: "<n>px" or "<n>%" of the subject's width and height, on each side.
    crop_margin: str = "0px"
    #: "full", "preview" or a longest side in pixels ("1024").
    size: str = FULL
    #: "alpha": the cutout is its mask alone, a greyscale image.
    channels: str = "rgba"

    def canonical(self) -> dict[str, Any]:
        """The options that differ from the defaults (what names a result in the cache)."""
        defaults = asdict(OutputOptions())
        chosen = {name: value for name, value in asdict(self).items() if value != defaults[name]}
        if self.background != BLUR:
            chosen.pop("background_blur", None)
        if not self.crop:
            chosen.pop("crop_margin", None)
        return chosen

    def shown(self) -> dict[str, Any]:
        """What clients see: the chosen options, without the background's storage key."""
        chosen = self.canonical()
        chosen.pop("background_image", None)
        return chosen

    def for_effect(self) -> OutputOptions:
        """Effects are styles: the mask-only output applies to the cutout alone."""
        return OutputOptions(**{**asdict(self), "channels": "rgba"})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> OutputOptions:
        return cls(**(data or {}))

    @property
    def alpha_only(self) -> bool:
        return self.channels == "alpha"

    @property
    def background_rgba(self) -> tuple[int, int, int, int] | None:
        """The background colour as RGBA, when it is a colour."""
        if self.background is None or not self.background.startswith("#"):
            return None
        digits = self.background[1:]
        red, green, blue = (int(digits[i : i + 2], 16) for i in (0, 2, 4))
        return red, green, blue, int(digits[6:8], 16)

    @property
    def margin(self) -> tuple[float, str]:
        """The crop margin as (amount, "px" or "%")."""
        found = parse_margin(self.crop_margin)
        if found is None:
            raise ValueError(f"bad crop margin {self.crop_margin!r}")
        return found


def parse_margin(text: str) -> tuple[float, str] | None:
    """A margin as (amount, "px" or "%"); a bare number is pixels. None when it is none."""
    found = MARGIN_PATTERN.match(text.strip().lower())
    if found is None:
        return None
    return float(found.group(1)), found.group(2) or "px"


def fitted_size(width: int, height: int, size: str) -> tuple[int, int]:
    """The result's size for the `size` option: never larger than the frame it is given."""
    if size == FULL:
        return width, height
    if size == PREVIEW:
        scale = min(1.0, (PREVIEW_PIXELS / (width * height)) ** 0.5)
    else:
        scale = min(1.0, int(size) / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


# --- encoding ---------------------------------------------------------------------------------

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


#: Print resolution: results made at the photo's own size carry it in their metadata, so
#: a print shop's software sizes them by it (a 12 MP photo: 34 × 25 cm).
PRINT_DPI = 300
#: EXIF tags of the resolution (WebP carries it in EXIF only).
EXIF_X_RESOLUTION, EXIF_Y_RESOLUTION, EXIF_RESOLUTION_UNIT = 0x011A, 0x011B, 0x0128
EXIF_INCHES = 2


def encode_rgba(
    rgba: npt.NDArray[np.uint8], output: OutputFormat, flat_colours: bool = False, dpi: int = 0
) -> bytes:
    """Encode a result, RGBA or (a mask) greyscale; flat-colour images become lossless WebP
    (bench/RESULTS.md, encoders). `dpi` (when not 0) goes into the file's metadata."""
    image = Image.fromarray(rgba, "L" if rgba.ndim == 2 else "RGBA")
    buffer = io.BytesIO()
    metadata = _metadata(output.name, dpi)
    if image.mode == "L" and output.name == "jpeg":
        image.save(buffer, "JPEG", quality=output.quality, optimize=False, **metadata)
        return buffer.getvalue()
    if output.name == "webp" and flat_colours:
        image.save(buffer, "WEBP", lossless=True, quality=0, method=WEBP_METHOD, **metadata)
    elif output.name == "webp":
        image.save(buffer, "WEBP", quality=output.quality, method=WEBP_METHOD, **metadata)
    elif output.name == "png":
        image.save(buffer, "PNG", compress_level=PNG_COMPRESS_LEVEL, **metadata)
    else:
        flat = Image.new("RGB", image.size, JPEG_BACKGROUND)
        flat.paste(image, mask=image.getchannel("A"))
        flat.save(buffer, "JPEG", quality=output.quality, optimize=False, **metadata)
    return buffer.getvalue()


def _metadata(format_name: str, dpi: int) -> dict[str, Any]:
    """The sRGB profile every result carries, and its resolution when it has one."""
    metadata: dict[str, Any] = {"icc_profile": SRGB_ICC}
    if not dpi:
        return metadata
    if format_name == "webp":
        exif = Image.Exif()
        exif[EXIF_X_RESOLUTION] = exif[EXIF_Y_RESOLUTION] = dpi
        exif[EXIF_RESOLUTION_UNIT] = EXIF_INCHES
        metadata["exif"] = exif.tobytes()
    else:
        metadata["dpi"] = (dpi, dpi)
    return metadata


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
