"""Result encoding: formats, alpha, and exact flat colours."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from api.upload import output_format
from effects import apply_effect
from effects.popart import PALETTE
from shared.errors import InvalidParameter
from shared.output import OutputFormat, encode_rgba
from tests.effects.inputs import cat_cutout


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))


def test_flat_colour_effects_keep_exact_palette_colours_in_webp():
    poster = apply_effect("popart", cat_cutout())
    exact = decoded(encode_rgba(poster, OutputFormat("webp", 85), flat_colours=True))
    visible_mask = poster[..., 3] > 0
    assert np.array_equal(exact[..., 3], poster[..., 3])
    assert np.array_equal(exact[visible_mask], poster[visible_mask]), "every visible pixel exact"
    visible = exact[exact[..., 3] > 0][:, :3]
    assert {tuple(int(v) for v in c) for c in np.unique(visible, axis=0)} <= set(PALETTE)
    lossy = decoded(encode_rgba(poster, OutputFormat("webp", 85)))
    assert not np.array_equal(lossy[..., :3], poster[..., :3]), "lossy WebP would smear them"


def test_jpeg_is_flattened_on_white():
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    image = Image.open(io.BytesIO(encode_rgba(rgba, OutputFormat("jpeg", 90))))
    assert image.mode == "RGB"
    assert np.asarray(image).min() > 245


@pytest.mark.parametrize(
    ("name", "quality", "expected"), [("jpg", None, ("jpeg", 90)), ("png", 40, ("png", None))]
)
def test_output_format_normalises(name, quality, expected):
    chosen = output_format(name, quality)
    assert (chosen.name, chosen.quality) == expected


def test_output_format_refuses_unknown_formats():
    with pytest.raises(InvalidParameter):
        output_format("gif", None)
