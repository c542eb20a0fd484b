"""Pure image functions of the cutout: what its mask says of the subject (its box, and
the measures the checks judge), and the output options (crop to the subject, a
background, a size, the mask alone). Cheap (milliseconds a megapixel): they run from the
cached cutout, never the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from shared.output import BLUR, IMAGE, OutputOptions, fitted_size

RGBA = npt.NDArray[np.uint8]
RGB = npt.NDArray[np.uint8]
#: A loader of the background photo (the job's input, or an uploaded background).
PhotoLoader = Callable[[], RGB]


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    width: int
    height: int

    def of(self, pixels: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        return pixels[self.y : self.y + self.height, self.x : self.x + self.width]


def subject_box(alpha: npt.NDArray[np.uint8]) -> Box | None:
    """The smallest box holding every visible pixel; None when nothing is visible."""
    rows = np.flatnonzero(alpha.any(axis=1))
    if rows.size == 0:
        return None
    columns = np.flatnonzero(alpha.any(axis=0))
    return Box(
        int(columns[0]),
        int(rows[0]),
        int(columns[-1] - columns[0] + 1),
        int(rows[-1] - rows[0] + 1),
    )


def subject_facts(alpha: npt.NDArray[np.uint8], photo: RGB | None = None) -> dict[str, float]:
    """The subject's box (in these pixels) and the share of the frame it covers; with the
    photo, also what the checks judge (shared/jobs/model.py's cutout_checks): how much of
    each edge it covers, its second largest part, how unsure its mask is, how sharp it is."""
    box = subject_box(alpha) or Box(0, 0, 0, 0)
    coverage = float(alpha.mean()) / 255.0
    facts = {
        "x": box.x,
        "y": box.y,
        "width": box.width,
        "height": box.height,
        "coverage": round(coverage, 4),
    }
    if photo is not None:
        solid = (alpha >= SOLID_ALPHA).astype(np.uint8)
        facts.update(_mask_measures(alpha, solid, box))
        facts["sharpness"] = round(_sharpness(photo, solid), 1)
    return facts


#: Alpha at or above this is the subject, for the measures below.
SOLID_ALPHA = 128
#: Alpha strictly between these is unsure (0.1 and 0.9 of 255).
UNSURE_ALPHA = (26, 229)
#: The band around the mask's outline where soft alpha is the edge, not doubt (fur, hair).
EDGE_BAND_PX = 3


def _mask_measures(
    alpha: npt.NDArray[np.uint8], solid: npt.NDArray[np.uint8], box: Box
) -> dict[str, float]:
    """`solid`: 1 where alpha is at least SOLID_ALPHA."""
    edges = {
        "edge_top": solid[0].mean(),
        "edge_bottom": solid[-1].mean(),
        "edge_left": solid[:, 0].mean(),
        "edge_right": solid[:, -1].mean(),
    }
    count, _, stats, _ = cv2.connectedComponentsWithStats(solid, connectivity=8)
    areas = sorted(stats[1:count, cv2.CC_STAT_AREA], reverse=True)
    second = areas[1] / solid.size if len(areas) > 1 else 0.0
    kernel = np.ones((2 * EDGE_BAND_PX + 1, 2 * EDGE_BAND_PX + 1), np.uint8)
    band = cv2.dilate(solid, kernel) != cv2.erode(solid, kernel)
    low, high = UNSURE_ALPHA
    unsure = (alpha > low) & (alpha < high) & ~band
    box_area = max(box.width * box.height, 1)
    return {
        **{name: round(float(share), 4) for name, share in edges.items()},
        "second_component": round(float(second), 4),
        "uncertain": round(float(unsure.sum()) / box_area, 4),
    }


#: Sharpness is measured with the long side at most this: a variance of the Laplacian
#: depends on the scale, and a print is judged from a distance that hides pixel noise.
SHARPNESS_SIDE = 512


def _sharpness(photo: RGB, solid: npt.NDArray[np.uint8]) -> float:
    """The variance of the Laplacian of the photo's grey, inside the subject (`solid`, its
    outline left out: the cut there is no detail of the photo's)."""
    height, width = solid.shape
    scale = min(1.0, SHARPNESS_SIDE / max(height, width))
    grey = np.asarray(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY), np.uint8)
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        grey = np.asarray(cv2.resize(grey, size, interpolation=cv2.INTER_AREA), np.uint8)
        solid = np.asarray(cv2.resize(solid, size, interpolation=cv2.INTER_NEAREST), np.uint8)
    inside = cv2.erode(solid, np.ones((5, 5), np.uint8))
    if not inside.any():
        return 0.0
    laplacian = cv2.Laplacian(grey, cv2.CV_64F)
    return float(laplacian[inside.astype(bool)].var())


def crop_box(alpha: npt.NDArray[np.uint8], margin: tuple[float, str]) -> Box:
    """The subject's box grown by the margin on each side, within the frame; the whole
    frame when nothing is visible."""
    height, width = alpha.shape
    subject = subject_box(alpha)
    if subject is None:
        return Box(0, 0, width, height)
    amount, unit = margin
    grow_x = amount * subject.width / 100 if unit == "%" else amount
    grow_y = amount * subject.height / 100 if unit == "%" else amount
    left = max(0, int(subject.x - grow_x))
    top = max(0, int(subject.y - grow_y))
    right = min(width, int(np.ceil(subject.x + subject.width + grow_x)))
    bottom = min(height, int(np.ceil(subject.y + subject.height + grow_y)))
    return Box(left, top, right - left, bottom - top)


def cover(photo: RGB, width: int, height: int) -> RGB:
    """`photo` scaled to cover width × height, centred, the overflow cut off."""
    photo_height, photo_width = photo.shape[:2]
    scale = max(width / photo_width, height / photo_height)
    scaled_width = max(width, round(photo_width * scale))
    scaled_height = max(height, round(photo_height * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    scaled = np.asarray(
        cv2.resize(photo, (scaled_width, scaled_height), interpolation=interpolation),
        dtype=np.uint8,
    )
    left = (scaled_width - width) // 2
    top = (scaled_height - height) // 2
    covered: RGB = scaled[top : top + height, left : left + width]
    return covered


def over(foreground: RGBA, background: RGBA) -> RGBA:
    """Porter–Duff "over": the foreground composited on the background, in 8-bit sRGB."""
    fg_alpha = foreground[..., 3:4].astype(np.float32) / 255
    bg_alpha = background[..., 3:4].astype(np.float32) / 255
    out_alpha = fg_alpha + bg_alpha * (1 - fg_alpha)
    colour = foreground[..., :3] * fg_alpha + background[..., :3] * bg_alpha * (1 - fg_alpha)
    safe = np.where(out_alpha > 0, out_alpha, 1)
    out = np.empty_like(foreground)
    out[..., :3] = np.clip(np.rint(colour / safe), 0, 255)
    out[..., 3:4] = np.rint(out_alpha * 255)
    return out


def backdrop(options: OutputOptions, box: Box, photo: PhotoLoader, upload: PhotoLoader) -> RGBA:
    """The background behind a result cropped to `box`."""
    if options.background == BLUR:
        radius = float(options.background_blur)
        blurred = np.asarray(
            cv2.GaussianBlur(photo(), (0, 0), sigmaX=radius, sigmaY=radius), dtype=np.uint8
        )
        return opaque(box.of(blurred))
    if options.background == IMAGE:
        return opaque(cover(upload(), box.width, box.height))
    colour = options.background_rgba
    if colour is None:
        raise ValueError(f"no backdrop for background {options.background!r}")
    return np.full((box.height, box.width, 4), colour, dtype=np.uint8)


def opaque(rgb: RGB) -> RGBA:
    alpha = np.full((*rgb.shape[:2], 1), 255, dtype=np.uint8)
    return np.concatenate([rgb, alpha], axis=-1)


def resized(pixels: npt.NDArray[np.uint8], size: str, flat_colours: bool) -> npt.NDArray[np.uint8]:
    height, width = pixels.shape[:2]
    target = fitted_size(width, height, size)
    if target == (width, height):
        return pixels
    # Flat-colour results keep their exact palette; photos are averaged down.
    interpolation = cv2.INTER_NEAREST if flat_colours else cv2.INTER_AREA
    return np.asarray(cv2.resize(pixels, target, interpolation=interpolation), dtype=np.uint8)


def render(
    result: RGBA,
    options: OutputOptions,
    photo: PhotoLoader,
    upload: PhotoLoader,
    flat_colours: bool = False,
) -> npt.NDArray[np.uint8]:
    """A result as the client asked for it: RGBA, or (channels=alpha) a greyscale mask."""
    alpha = result[..., 3]
    height, width = alpha.shape
    box = crop_box(alpha, options.margin) if options.crop else Box(0, 0, width, height)
    if options.alpha_only:
        return resized(np.ascontiguousarray(box.of(alpha)), options.size, flat_colours=False)
    pixels: RGBA = np.ascontiguousarray(box.of(result))
    if options.background is not None:
        pixels = over(pixels, backdrop(options, box, photo, upload))
    return resized(pixels, options.size, flat_colours)
