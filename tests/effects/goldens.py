"""Golden images; after an intended change of look: `python -m tests.effects.goldens`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from effects import EFFECT_NAMES, apply_effect
from tests.effects.inputs import GOLDEN_INPUTS

GOLDEN_DIR = Path(__file__).with_name("golden")


def golden_path(input_name: str, effect: str) -> Path:
    return GOLDEN_DIR / f"{input_name}-{effect}.png"


def load_golden(input_name: str, effect: str) -> np.ndarray:
    return np.asarray(Image.open(golden_path(input_name, effect)).convert("RGBA"))


def write_goldens() -> None:
    GOLDEN_DIR.mkdir(exist_ok=True)
    for input_name, make in GOLDEN_INPUTS.items():
        for effect in EFFECT_NAMES:
            rendered = apply_effect(effect, make())
            Image.fromarray(rendered, "RGBA").save(golden_path(input_name, effect), optimize=True)


if __name__ == "__main__":
    write_goldens()
