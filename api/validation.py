"""The form of POST /v1/jobs, validated: effects, primary, format, params, webhook, output
options, uploads; a field cutfx does not know is a 422 naming it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from werkzeug.datastructures import FileStorage, MultiDict

from api.images import BACKGROUND, PHOTO
from effects import EFFECT_NAMES, get_effect
from shared.errors import InvalidParameter, MalformedRequest, PayloadTooLarge
from shared.jobs.model import EventType, Webhook
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
    OutputFormat,
    OutputOptions,
    parse_margin,
)
from shared.output import PREVIEW as SIZE_PREVIEW
from shared.webhook_targets import check_callback_address, check_callback_url
from shared.webhooks import WEBHOOK_EVENT_TYPES


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
        FormField(PHOTO.field, "string", format="binary", required=True),
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
    )


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
        channels=_parse_channels(form.get("channels")),
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


def _parse_channels(raw: str | None) -> str:
    value = (raw or CHANNELS[0]).strip().lower()
    if value not in CHANNELS:
        raise InvalidParameter(
            f"channels must be one of {', '.join(CHANNELS)}; got {raw!r}", field="channels"
        )
    return value
