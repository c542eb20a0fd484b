"""Time each effect, and all four, on one CPU core: `python -m bench.effects`.

Writes medians into bench/RESULTS.md. Targets (1024×1024): all four < 100 ms,
dithering < 30 ms; the service we replace spent ~3.5 s on the four.
"""

from __future__ import annotations

import argparse
import os
import time

import cv2
import numpy as np
from PIL import Image

from bench.common import median_ms, write_section
from effects import EFFECT_NAMES, apply_effect, get_effect
from shared.output import OutputFormat, encode_rgba
from worker.memory import keep_freed_memory

SIZES = {"1024×1024": (1024, 1024), "12 MP (4000×3000)": (3000, 4000)}
TARGET_ALL_MS = 100
TARGET_DITHER_MS = 30


def photo_cutout(height: int, width: int) -> np.ndarray:
    """The sample cat, resized, with a soft oval alpha: photo-like content, not noise."""
    rgb = np.asarray(Image.open("samples/chelsea.png").convert("RGB").resize((width, height)))
    yy, xx = np.mgrid[:height, :width]
    distance = ((yy - height / 2) / (height * 0.45)) ** 2 + ((xx - width / 2) / (width * 0.4)) ** 2
    alpha = (np.clip((1 - distance) * 4, 0, 1) * 255).astype(np.uint8)
    return np.ascontiguousarray(np.dstack([rgb, alpha]))


def time_call(function, runs: int) -> list[float]:  # type: ignore[no-untyped-def]
    function()  # compile and warm caches
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--return-memory",
        action="store_true",
        help="free large arrays back to the system, as workers did before worker/memory.py",
    )
    args = parser.parse_args()
    if not args.return_memory:
        keep_freed_memory()  # as a worker runs them
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    cv2.setNumThreads(1)

    rows = [
        "| input | "
        + " | ".join(EFFECT_NAMES)
        + " | all four | WebP encode ×4, as the worker does |",
        "|---" * 7 + "|",
    ]
    for label, (height, width) in SIZES.items():
        rgba = photo_cutout(height, width)
        runs = args.runs if height * width <= 2_000_000 else max(3, args.runs // 3)
        per_effect = {
            name: median_ms(time_call(lambda n=name, image=rgba: apply_effect(n, image), runs))
            for name in EFFECT_NAMES
        }
        all_four = median_ms(
            time_call(lambda image=rgba: [apply_effect(n, image) for n in EFFECT_NAMES], runs)
        )
        outputs = [apply_effect(n, rgba) for n in EFFECT_NAMES]
        encode = median_ms(
            time_call(
                lambda done=outputs: [
                    encode_rgba(o, OutputFormat(), get_effect(n).flat_colours)
                    for o, n in zip(done, EFFECT_NAMES, strict=True)
                ],
                runs,
            )
        )
        cells = " | ".join(f"{per_effect[n]:.1f}" for n in EFFECT_NAMES)
        rows.append(f"| {label} | {cells} | **{all_four:.1f}** | {encode:.1f} |")
        print(
            label,
            {k: round(v, 1) for k, v in per_effect.items()},
            "all",
            round(all_four, 1),
            "encode",
            round(encode, 1),
        )
    body = (
        "`python -m bench.effects` — median milliseconds on one pinned CPU core "
        f"(targets at 1024×1024: all four < {TARGET_ALL_MS} ms, dithering < {TARGET_DITHER_MS} ms; "
        "the replaced service: ~3500 ms).\n\n" + "\n".join(rows)
    )
    if not args.no_write:
        write_section("Effects (bench/effects.py)", body)


if __name__ == "__main__":
    main()
