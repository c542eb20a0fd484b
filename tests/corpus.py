"""Photos as customers send them, and files that are no photos: all generated here.

Each case is a name, the bytes, and what cutfx must answer: None for "accepted,
and its job succeeds", or the HTTP status and error code of the refusal.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from tests import icc

WIDTH, HEIGHT = 96, 72


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    refusal: tuple[int, str] | None = None


def pet(width: int = WIDTH, height: int = HEIGHT, seed: int = 0) -> np.ndarray:
    """A photo-like RGB picture: a smooth background and a round 'subject'."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack(
        [x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), np.full_like(x, 120)], -1
    ).astype(np.float64)
    inside = (x - width / 2) ** 2 + (y - height / 2) ** 2 < (min(width, height) / 3) ** 2
    image[inside] = (200, 140, 60)
    image += rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def rgb(seed: int = 0) -> Image.Image:
    return Image.fromarray(pet(seed=seed))


def frames() -> list[Image.Image]:
    return [rgb(seed) for seed in range(3)]


def sixteen_bit_grey() -> bytes:
    ramp = np.linspace(0, 65535, WIDTH * HEIGHT).reshape(HEIGHT, WIDTH).astype(np.uint16)
    return encoded(Image.fromarray(ramp), "PNG")


def sixteen_bit_tiff() -> bytes:
    ramp = np.linspace(0, 65535, WIDTH * HEIGHT).reshape(HEIGHT, WIDTH).astype(np.uint16)
    return encoded(Image.fromarray(ramp), "TIFF")


def float_tiff() -> bytes:
    ramp = np.linspace(0, 1, WIDTH * HEIGHT).reshape(HEIGHT, WIDTH).astype(np.float32)
    return encoded(Image.fromarray(ramp, "F"), "TIFF")


def palette_with_transparency() -> bytes:
    image = rgb().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return encoded(image, "PNG", transparency=0)


def grey_alpha() -> bytes:
    grey = rgb().convert("L")
    alpha = Image.fromarray(np.where(pet()[..., 0] > 150, 255, 0).astype(np.uint8))
    grey.putalpha(alpha)
    return encoded(grey, "PNG")


def with_trailing_bytes() -> bytes:
    """A JPEG followed by more data, as Samsung's motion photos carry their video."""
    return encoded(rgb(), "JPEG") + b"\x00\x00\x00\x18ftypmp42" + bytes(4096)


def half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def with_metadata() -> bytes:
    """A phone JPEG with EXIF (maker, orientation 6), a GPS position and XMP."""
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif[0x0112] = 6
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = (52.0, 22.0, 1.5)
    return encoded(rgb(), "JPEG", exif=exif.tobytes(), xmp=b"<x:xmpmeta>home</x:xmpmeta>")


def mpo() -> bytes:
    first, second = frames()[:2]
    return encoded(first, "MPO", save_all=True, append_images=[second])


def pixel_bomb() -> bytes:
    """A tiny PNG that claims 100000×100000 pixels."""
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + chunk(b"IEND", b"")
    )


def animated(fmt: str) -> Callable[[], bytes]:
    """Three different frames; cutfx must take the first."""

    def make() -> bytes:
        first, *rest = frames()
        return encoded(first, fmt, save_all=True, append_images=rest)

    return make


def blank_png(width: int, height: int) -> Callable[[], bytes]:
    return lambda: encoded(Image.new("RGB", (width, height)), "PNG")


NOT_AN_IMAGE = (415, "unsupported_media_type")
UNREADABLE = (400, "invalid_image")
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>'
PDF = b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF"

GOOD: list[tuple[str, Callable[[], bytes]]] = [
    ("baseline JPEG", lambda: encoded(rgb(), "JPEG", quality=90)),
    ("progressive JPEG", lambda: encoded(rgb(), "JPEG", progressive=True)),
    ("JPEG with EXIF, GPS and XMP", with_metadata),
    ("JPEG with trailing bytes (motion photo)", with_trailing_bytes),
    ("MPO (phone portrait/depth shot)", mpo),
    ("CMYK JPEG", lambda: encoded(rgb().convert("CMYK"), "JPEG")),
    ("greyscale JPEG", lambda: encoded(rgb().convert("L"), "JPEG")),
    ("Display P3 JPEG (iPhone)", lambda: encoded(rgb(), "JPEG", icc_profile=icc.display_p3())),
    ("Adobe RGB JPEG", lambda: encoded(rgb(), "JPEG", icc_profile=icc.adobe_rgb())),
    ("PNG", lambda: encoded(rgb(), "PNG")),
    ("16-bit greyscale PNG", sixteen_bit_grey),
    ("greyscale + alpha PNG", grey_alpha),
    ("palette PNG with transparency", palette_with_transparency),
    ("APNG (animated)", animated("PNG")),
    ("HEIC (iPhone default)", lambda: encoded(rgb(), "HEIF", quality=90)),
    ("AVIF", lambda: encoded(rgb(), "AVIF", quality=90)),
    ("WebP", lambda: encoded(rgb(), "WEBP", quality=90)),
    ("animated WebP", animated("WEBP")),
    ("animated GIF", animated("GIF")),
    ("BMP", lambda: encoded(rgb(), "BMP")),
    ("TIFF", lambda: encoded(rgb(), "TIFF")),
    ("multi-page TIFF", animated("TIFF")),
    ("16-bit TIFF", sixteen_bit_tiff),
    ("float TIFF", float_tiff),
    ("smallest side taken (32×640)", lambda: encoded(Image.fromarray(pet(640, 32)), "PNG")),
]

BAD: list[tuple[str, Callable[[], bytes], tuple[int, str]]] = [
    ("empty file", lambda: b"", UNREADABLE),
    ("plain text", lambda: b"a shopping list, not a photo\n", NOT_AN_IMAGE),
    ("HTML", lambda: b"<!doctype html><html><body>hi</body></html>", NOT_AN_IMAGE),
    ("SVG", lambda: SVG, NOT_AN_IMAGE),
    ("PDF", lambda: PDF, NOT_AN_IMAGE),
    ("truncated JPEG header", lambda: encoded(rgb(), "JPEG")[:400], UNREADABLE),
    ("truncated JPEG data", lambda: half(encoded(rgb(), "JPEG")), UNREADABLE),
    ("pixel bomb", pixel_bomb, (413, "image_too_large")),
    ("1×1 PNG", blank_png(1, 1), (422, "image_too_small")),
    ("20000×1 PNG", blank_png(20000, 1), (422, "image_too_small")),
    ("1000×40 strip", blank_png(1000, 40), (422, "image_too_thin")),
]


def corpus() -> list[Case]:
    return [Case(name, make()) for name, make in GOOD] + [
        Case(name, make(), refusal) for name, make, refusal in BAD
    ]
