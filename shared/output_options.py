"""What a client asks of each result besides the effect: background, crop, size, channels.

Options are applied after the effect, as cheap renders from the cached cutout
(worker/render.py), so a photo re-styled with other options never runs the
model again. Their canonical form (only what differs from the defaults) is part
of each result's cache key.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

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
