"""The upload of POST /v1/jobs: its photos decoded and normalised, and its form validated.

The photos. What goes in: JPEG (an MPO's primary picture, a JPEG with trailing bytes such
as a motion photo's video), PNG, WebP, GIF, BMP, TIFF, HEIC/HEIF (pillow-heif) and AVIF.
An animated or multi-frame file (GIF, WebP, APNG, multi-page TIFF) gives its first frame.
What comes out: upright (EXIF orientation, all eight values), 8-bit (16-bit and float
images scaled, not clipped), sRGB (an embedded ICC profile converted with Little CMS), RGB
on white, its long side capped. Only pixels survive: no EXIF, GPS, XMP or profile reaches
a result.

The form: effects, primary, format, params, webhook, output options, uploads. One table
(`job_form`) drives the parser and the OpenAPI document's form schema; a field cutfx does
not know is a 422 naming it.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

import numpy as np
import numpy.typing as npt
import pillow_heif
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError
from werkzeug.datastructures import FileStorage, MultiDict

from effects import EFFECT_NAMES, get_effect
from shared.errors import (
    ImageTooLarge,
    ImageTooSmall,
    ImageTooThin,
    InvalidImage,
    InvalidParameter,
    MalformedRequest,
    PayloadTooLarge,
    ServiceBusy,
    UnsupportedMediaType,
)
from shared.gcs import is_gs_url, read_photo_object
from shared.jobs.model import (
    BATCH,
    INTERACTIVE,
    LANES,
    ORIGINAL,
    RESOLUTIONS,
    STANDARD,
    EventType,
    Webhook,
)
from shared.outbound import (
    PHOTO_FIELD,
    check_callback_address,
    check_callback_url,
    fetch_photo,
    redacted,
)
from shared.output import (
    BLUR,
    BLUR_RADIUS_RANGE,
    CHANNELS,
    COLOUR_PATTERN,
    DEFAULT_BLUR_RADIUS,
    DEFAULT_OUTPUT_FORMAT,
    FULL,
    IMAGE,
    MAX_MARGIN_PERCENT,
    MAX_MARGIN_PX,
    MAX_SIDE_RANGE,
    OUTPUT_FORMATS,
    PREVIEW,
    PREVIEW_PIXELS,
    PRINT_DPI,
    OutputFormat,
    OutputOptions,
    parse_margin,
)
from shared.output import PREVIEW as SIZE_PREVIEW
from shared.settings import Settings
from shared.webhooks import WEBHOOK_EVENT_TYPES

# --- the photos -----------------------------------------------------------------------

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
#: The photo's address, instead of the photo (photo_from_url, below).
PHOTO_URL_FIELD = PHOTO_FIELD
PHOTO_BY_URL = UploadPart(PHOTO_URL_FIELD, "photo at image_url")


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


# --- the form -------------------------------------------------------------------------


@dataclass(frozen=True)
class JobOptions:
    """The validated form fields of POST /v1/jobs, apart from the image."""

    effects: tuple[str, ...]
    primary: str | None
    output: OutputFormat
    params: dict[str, dict[str, Any]]
    webhook: Webhook | None = None
    output_options: OutputOptions = field(default_factory=OutputOptions)
    #: From the Cancel-After header: unfinished work is canceled this long after submit.
    cancel_after_s: float | None = None
    preview: bool = False
    strict: bool = False
    resolution: str = STANDARD
    lane: str = INTERACTIVE


#: The range of `quality` for the lossy formats.
QUALITY_RANGE = (1, 100)


@dataclass(frozen=True)
class FormField:
    """One field of the POST /v1/jobs form: what validation knows it by and what the
    OpenAPI document says of it."""

    name: str
    type: str
    description: str = ""
    #: Said in the description; no default means the field's absence has its own meaning.
    default: str | None = None
    minimum: int | None = None
    maximum: int | None = None
    enum: tuple[str, ...] | None = None
    #: `binary` for a file part, `uri` for an address.
    format: str | None = None
    required: bool = False

    @property
    def is_file(self) -> bool:
        return self.format == "binary"

    def schema(self) -> dict[str, Any]:
        """The field as a JSON Schema property."""
        schema: dict[str, Any] = {"type": self.type}
        if self.format is not None:
            schema["format"] = self.format
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        if self.enum is not None:
            schema["enum"] = list(self.enum)
        described = self.description
        if self.default is not None:
            described = (
                f"{described} (default {self.default})" if described else f"Default {self.default}"
            )
        if described:
            schema["description"] = described
        return schema


def job_form(effect_names: tuple[str, ...] = EFFECT_NAMES) -> tuple[FormField, ...]:
    """The form of POST /v1/jobs, field by field, with every range and default from the
    constants its parsers check against."""
    low_side, high_side = MAX_SIDE_RANGE
    return (
        FormField(PHOTO.field, "string", "The photo (or send image_url)", format="binary"),
        FormField(
            PHOTO_URL_FIELD,
            "string",
            "The photo's address instead of the photo: an http(s) URL, or gs://bucket/path for "
            "a bucket the service reads",
            format="uri",
        ),
        FormField("effects", "string", f"Comma list of {', '.join(effect_names)}", "all"),
        FormField("primary", "string", "The effect to run first", "the first listed"),
        FormField("format", "string", enum=tuple(OUTPUT_FORMATS), default=DEFAULT_OUTPUT_FORMAT),
        FormField(
            "quality",
            "integer",
            "Quality of the lossy formats",
            ", ".join(f"{name} {q}" for name, (_, _, q) in OUTPUT_FORMATS.items() if q),
            *QUALITY_RANGE,
        ),
        FormField("params", "string", "JSON object keyed by effect name"),
        FormField("callback_url", "string", "Webhook URL for signed events", format="uri"),
        FormField("callback_events", "string", "Comma list of event types", "all"),
        FormField(
            "background",
            "string",
            "Behind the subject: #rrggbb or #rrggbbaa, 'blur' (the photo blurred) or "
            f"'{IMAGE}' (the {BACKGROUND.field} part)",
            "transparent",
        ),
        FormField(
            "background_blur",
            "integer",
            "Blur radius in pixels, with background=blur",
            str(DEFAULT_BLUR_RADIUS),
            *BLUR_RADIUS_RANGE,
        ),
        FormField(
            BACKGROUND.field,
            "string",
            "An image scaled to cover the frame behind the subject",
            format="binary",
        ),
        FormField("crop", "boolean", "Crop to the subject", "false"),
        FormField(
            "crop_margin",
            "string",
            f"With crop: pixels ('24', '24px', at most {MAX_MARGIN_PX}) or a share of the "
            f"subject ('10%', at most {MAX_MARGIN_PERCENT:g}%)",
        ),
        FormField(
            "size",
            "string",
            f"'{FULL}' (default), '{SIZE_PREVIEW}' (at most {PREVIEW_PIXELS / 1e6:g} MP) or a "
            f"longest side in pixels ({low_side} to {high_side}); never enlarged",
        ),
        FormField(
            "channels",
            "string",
            "alpha: the cutout result is the mask alone (greyscale)",
            enum=CHANNELS,
        ),
        FormField(
            "preview",
            "boolean",
            "A quick 'preview' result first, from the fast model, announced before the cutout",
            "false",
        ),
        FormField(
            "strict",
            "boolean",
            "A photo without a subject fails its cutout (no_subject) instead of only warning",
            "false",
        ),
        FormField(
            "resolution",
            "string",
            f"'{ORIGINAL}': every result at the photo's own size (up to CUTFX_MAX_PIXELS), "
            f"{PRINT_DPI} dpi, for print; '{STANDARD}': at most CUTFX_MAX_SIDE",
            STANDARD,
            enum=RESOLUTIONS,
        ),
        FormField(
            "lane",
            "string",
            f"'{INTERACTIVE}': someone waits on a page, served first; '{BATCH}': a script's "
            "folder, served with what is left, never starved (cutfx batch sends it)",
            INTERACTIVE,
            enum=LANES,
        ),
    )


#: The form fields of POST /v1/jobs, and its file parts.
_JOB_FORM = job_form()
FORM_FIELDS = frozenset(field.name for field in _JOB_FORM if not field.is_file)
FILE_FIELDS = frozenset(field.name for field in _JOB_FORM if field.is_file)


def check_known_fields(form_names: set[str], file_names: set[str]) -> None:
    """A field cutfx does not know is refused, never silently ignored."""
    unknown = sorted(str(name) for name in (form_names - FORM_FIELDS) | (file_names - FILE_FIELDS))
    if unknown:
        known = ", ".join(sorted(FORM_FIELDS | FILE_FIELDS))
        raise InvalidParameter(
            f"unknown field {unknown[0]!r}; the fields are {known}", field=unknown[0]
        )


def parse_options(
    form: MultiDict[str, str],
    key_id: str = "",
    allow_loopback_callbacks: bool = False,
    has_background_image: bool = False,
) -> JobOptions:
    effects = _parse_effects(form.get("effects"))
    primary = form.get("primary") or None
    if primary is not None and primary not in effects:
        raise InvalidParameter(
            f"primary must be one of the requested effects ({', '.join(effects)})", field="primary"
        )
    output = output_format(form.get("format"), _parse_quality(form.get("quality")))
    return JobOptions(
        effects,
        primary or effects[0],
        output,
        _parse_params(form.get("params"), effects),
        _parse_webhook(
            form.get("callback_url"), form.get("callback_events"), key_id, allow_loopback_callbacks
        ),
        parse_output_options(form, has_background_image),
        preview=parse_flag(form.get("preview"), "preview"),
        strict=parse_flag(form.get("strict"), "strict"),
        resolution=_parse_choice(form.get("resolution"), "resolution", RESOLUTIONS),
        lane=_parse_choice(form.get("lane"), "lane", LANES),
    )


def _parse_choice(raw: str | None, name: str, choices: tuple[str, ...]) -> str:
    """One of `choices` (the first when left out); a 422 naming the field otherwise."""
    value = (raw or choices[0]).strip().lower()
    if value not in choices:
        raise InvalidParameter(
            f"{name} must be one of {', '.join(choices)}; got {raw!r}", field=name
        )
    return value


def _parse_webhook(
    url: str | None, events: str | None, key_id: str, allow_loopback: bool
) -> Webhook | None:
    if not url:
        if events:
            raise InvalidParameter("callback_events needs a callback_url", field="callback_events")
        return None
    check_callback_url(url)
    chosen = tuple(name.strip() for name in (events or "").split(",") if name.strip())
    unknown = [name for name in chosen if name not in WEBHOOK_EVENT_TYPES]
    if unknown:
        raise InvalidParameter(
            f"unknown event types {unknown}; choose from {', '.join(WEBHOOK_EVENT_TYPES)}",
            field="callback_events",
        )
    check_callback_address(url, allow_loopback)
    return Webhook(url, tuple(EventType(name) for name in chosen) or WEBHOOK_EVENT_TYPES, key_id)


def _parse_effects(raw: str | None) -> tuple[str, ...]:
    if raw is None or not raw.strip():
        return EFFECT_NAMES
    names: list[str] = []
    for name in (part.strip() for part in raw.split(",")):
        if name and name not in names:
            get_effect(name)
            names.append(name)
    if not names:
        raise InvalidParameter("effects must name at least one effect", field="effects")
    return tuple(names)


def _parse_quality(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidParameter(
            f"quality must be an integer; got {raw!r}", field="quality"
        ) from None


def _parse_params(raw: str | None, effects: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    supplied: Any = {}
    if raw:
        try:
            supplied = json.loads(raw)
        except ValueError as exc:
            raise MalformedRequest(f"params is not valid JSON: {exc}", field="params") from None
        except RecursionError:
            raise MalformedRequest("params is nested too deeply", field="params") from None
    if not isinstance(supplied, dict):
        raise MalformedRequest("params must be a JSON object keyed by effect", field="params")
    for name, value in supplied.items():
        if name not in effects:
            raise InvalidParameter(
                f"params names {name!r}, which is not among the requested effects", field="params"
            )
        if not isinstance(value, dict):
            raise InvalidParameter(f"params.{name} must be an object", field=f"params.{name}")
    return {name: get_effect(name).validate_params(supplied.get(name)) for name in effects}


# --- the photo: uploaded, or fetched from its address -----------------------------------


def json_fields(body: object) -> MultiDict[str, str]:
    """A JSON body's fields as the form's: the same names, the same parsers. Numbers and
    booleans as the form would send them, `params` as an object or a JSON string,
    `effects` and `callback_events` as a list or a comma list."""
    if not isinstance(body, dict):
        raise MalformedRequest('send a JSON object of the form\'s fields: {"image_url": ...}')
    fields: MultiDict[str, str] = MultiDict()
    for name, value in body.items():
        if name in FILE_FIELDS:
            raise InvalidParameter(
                f"{name} is a file: send it in a multipart/form-data upload, or send "
                f"{PHOTO_URL_FIELD} in JSON",
                field=name,
            )
        fields[name] = _as_form_value(str(name), value)
    return fields


def _as_form_value(name: str, value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    if isinstance(value, dict) and name == "params":
        return json.dumps(value)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return ",".join(value)
    raise InvalidParameter(f"{name} must be a string, a number or a boolean", field=name)


def check_one_photo(url: str | None, upload: FileStorage | None) -> None:
    """Exactly one of the photo and its address."""
    if url and upload is not None:
        raise InvalidParameter(
            f"send the photo as {PHOTO.field!r} or its address as {PHOTO_URL_FIELD!r}, not both",
            field=PHOTO_URL_FIELD,
        )
    if not url and upload is None:
        raise MalformedRequest(
            f"send the photo as the multipart field {PHOTO.field!r}, or its address as "
            f"{PHOTO_URL_FIELD!r}",
            field=PHOTO.field,
        )


def photo_from_url(url: str, settings: Settings) -> bytes:
    """The bytes at the photo's address: an allowed bucket's object, or a public http(s)
    URL fetched with the webhooks' protections (shared/outbound.py). Either way no more
    than an upload may be, and nothing is stored until the bytes decode as a photo."""
    started = time.perf_counter()
    if is_gs_url(url):
        data = read_photo_object(url, settings.input_buckets, settings.max_upload_bytes)
    else:
        data = fetch_photo(
            url, settings.max_upload_bytes, settings.fetch_timeout_s, settings.fetch_allow_loopback
        )
    logger.info(
        "photo fetched",
        extra={
            "url": redacted(url),
            "bytes": len(data),
            "seconds": round(time.perf_counter() - started, 3),
        },
    )
    return data


def read_upload(upload: FileStorage | None, max_bytes: int, field: str = PHOTO.field) -> bytes:
    if upload is None:
        raise MalformedRequest(f"the multipart field {field!r} is required", field=field)
    data = upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"the {field} is larger than {max_bytes} bytes", field=field)
    return data


#: Cancel-After, as Replicate takes it: seconds ("90"), or a Go-style duration ("1m30s").
DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
DURATION_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
CANCEL_AFTER_RANGE_S = (1.0, 24 * 3600.0)


def parse_cancel_after(raw: str) -> float:
    """The Cancel-After header in seconds; 400 naming the header when it is no duration."""
    text = raw.strip()
    low, high = CANCEL_AFTER_RANGE_S
    problem = MalformedRequest(
        f"Cancel-After must be a duration from {low:g} s to {high:g} s, "
        f"as seconds ('90') or like '1m30s'; got {raw!r}",
        field="Cancel-After",
    )
    if re.fullmatch(r"\d+(\.\d+)?", text):
        seconds = float(text)
    elif text and DURATION_PART.sub("", text) == "":
        seconds = sum(float(n) * DURATION_UNITS_S[unit] for n, unit in DURATION_PART.findall(text))
    else:
        raise problem
    if not low <= seconds <= high:
        raise problem
    return seconds


def output_format(name: str | None, quality: int | None) -> OutputFormat:
    """Validate a client's format and quality; quality means nothing for PNG."""
    name = (name or DEFAULT_OUTPUT_FORMAT).lower()
    if name == "jpg":
        name = "jpeg"
    if name not in OUTPUT_FORMATS:
        raise InvalidParameter(
            f"format must be one of {', '.join(OUTPUT_FORMATS)}; got {name!r}", field="format"
        )
    default_quality = OUTPUT_FORMATS[name][2]
    if default_quality is None:
        return OutputFormat(name, None)
    if quality is None:
        return OutputFormat(name, default_quality)
    low, high = QUALITY_RANGE
    if not low <= quality <= high:
        raise InvalidParameter(
            f"quality must be between {low} and {high}; got {quality}", field="quality"
        )
    return OutputFormat(name, quality)


# The output options of POST /v1/jobs (background, crop, size, channels), validated.
#
# Each bad value is a 422 naming its field; options that only mean something with
# another (a blur radius without a blurred background, a margin without a crop) are
# refused rather than ignored.

TRUE_WORDS = ("true", "1", "yes")
FALSE_WORDS = ("false", "0", "no", "")


def parse_output_options(form: MultiDict[str, str], has_background_image: bool) -> OutputOptions:
    """The options as given; the background image's key is filled in once it is stored."""
    background = _parse_background(form.get("background"), has_background_image)
    crop = parse_flag(form.get("crop"), "crop")
    return OutputOptions(
        background=background,
        background_blur=_parse_blur(form.get("background_blur"), background),
        crop=crop,
        crop_margin=_parse_margin(form.get("crop_margin"), crop),
        size=_parse_size(form.get("size")),
        channels=_parse_choice(form.get("channels"), "channels", CHANNELS),
    )


def _parse_background(raw: str | None, has_image: bool) -> str | None:
    value = (raw or "").strip().lower()
    if has_image:
        if value not in ("", IMAGE):
            raise InvalidParameter(
                "background must be 'image' (or left out) when background_image is sent",
                field="background",
            )
        return IMAGE
    if value in ("", "transparent", "none"):
        return None
    if value == IMAGE:
        raise InvalidParameter(
            "background=image needs the background_image part", field="background_image"
        )
    if value == BLUR:
        return BLUR
    if not COLOUR_PATTERN.match(value):
        raise InvalidParameter(
            f"background must be #rrggbb, #rrggbbaa, 'blur' or 'image'; got {raw!r}",
            field="background",
        )
    return value if len(value) == 9 else value + "ff"


def _parse_blur(raw: str | None, background: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_BLUR_RADIUS
    if background != BLUR:
        raise InvalidParameter("background_blur needs background=blur", field="background_blur")
    low, high = BLUR_RADIUS_RANGE
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise InvalidParameter(
            f"background_blur must be a whole number of pixels from {low} to {high}",
            field="background_blur",
        )
    return int(raw)


def parse_flag(raw: str | None, field: str) -> bool:
    value = (raw or "").strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise InvalidParameter(f"{field} must be true or false; got {raw!r}", field=field)


def _parse_margin(raw: str | None, crop: bool) -> str:
    if raw is None or raw == "":
        return "0px"
    if not crop:
        raise InvalidParameter("crop_margin needs crop=true", field="crop_margin")
    found = parse_margin(raw)
    problem = InvalidParameter(
        f"crop_margin must be pixels (0 to {MAX_MARGIN_PX}, e.g. '24' or '24px') or a "
        f"percentage of the subject (0 to {MAX_MARGIN_PERCENT:g}, e.g. '10%'); got {raw!r}",
        field="crop_margin",
    )
    if found is None:
        raise problem
    amount, unit = found
    if amount > (MAX_MARGIN_PERCENT if unit == "%" else MAX_MARGIN_PX):
        raise problem
    if unit == "px" and not amount.is_integer():
        raise problem
    return f"{amount:g}{unit}"


def _parse_size(raw: str | None) -> str:
    value = (raw or FULL).strip().lower()
    if value in (FULL, PREVIEW):
        return value
    low, high = MAX_SIDE_RANGE
    if value.isdigit() and low <= int(value) <= high:
        return str(int(value))
    raise InvalidParameter(
        f"size must be 'full', 'preview' or a longest side from {low} to {high} pixels; "
        f"got {raw!r}",
        field="size",
    )
