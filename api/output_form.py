"""The output options of POST /v1/jobs (background, crop, size, channels), validated.

Each bad value is a 422 naming its field; options that only mean something with
another (a blur radius without a blurred background, a margin without a crop) are
refused rather than ignored.
"""

from __future__ import annotations

from werkzeug.datastructures import MultiDict

from shared.errors import InvalidParameter
from shared.output_options import (
    BLUR,
    BLUR_RADIUS_RANGE,
    CHANNELS,
    COLOUR_PATTERN,
    DEFAULT_BLUR_RADIUS,
    FULL,
    IMAGE,
    MAX_MARGIN_PERCENT,
    MAX_MARGIN_PX,
    MAX_SIDE_RANGE,
    PREVIEW,
    OutputOptions,
    parse_margin,
)

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
