"""The inference stage broken down: `python -m bench.inference_stage`.

A worker's `inference` stage (worker/tasks.py) is `LoadedModel.segment`: the photo
prepared for the network, the forward, then the ending (the mask at the photo's size and
the foreground colours). This times each part in one process on a 1024×681 photo, for
the engine the worker picks here, torch fp32 and any other engine asked for (--engine),
and the whole segment, medians of RUNS. Writes bench/RESULTS.md unless --no-write.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

from bench.common import SAMPLE, cpu_kind, publish, random_checkpoint
from shared.settings import Settings
from worker.engines import ENGINES, cpu_flags
from worker.model import LoadedModel, load_model, mask_from_logits

PHOTO_SIZE = (1024, 681)
RUNS = 6


def timed(call: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    found = call(*args)
    return found, time.perf_counter() - started


def parts_of(model: LoadedModel, rgb: np.ndarray) -> dict[str, float]:
    """Median seconds of each part of `model.segment(rgb)`, and of the whole."""
    model.segment(rgb)  # first-call costs out of the figures
    samples: dict[str, list[float]] = {}
    for _ in range(RUNS):
        prepared, prepare_s = timed(model.prepare, rgb)
        (logits,), forward_s = timed(model.saliency, [prepared])
        mask, mask_s = timed(mask_from_logits, logits, rgb.shape[:2])
        _, foreground_s = timed(model.matting, rgb / 255.0, mask)
        _, segment_s = timed(model.segment, rgb)
        for name, seconds in (
            ("prepare", prepare_s),
            ("forward", forward_s),
            ("mask", mask_s),
            ("foreground", foreground_s),
            ("segment", segment_s),
        ):
            samples.setdefault(name, []).append(seconds)
    return {name: statistics.median(values) for name, values in samples.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--engine",
        action="append",
        default=[],
        choices=sorted(ENGINES),
        help="another engine to break down (CUTFX_ENGINE's names); may be repeated",
    )
    args = parser.parse_args(argv)
    settings = Settings.from_env().with_overrides(
        model_mode="fast", model_ckpt=str(random_checkpoint("fast")), device="cpu"
    )
    rgb = np.asarray(Image.open(SAMPLE).convert("RGB").resize(PHOTO_SIZE))
    rows = []
    for engine in dict.fromkeys(("auto", "torch-fp32", *args.engine)):
        model = load_model(settings.with_overrides(engine=engine))
        found = parts_of(model, rgb)
        outside = found["segment"] - found["forward"]
        rows.append(
            f"| {model.engine.name}{' (the pick)' if engine == 'auto' else ''} | "
            + " | ".join(
                f"{found[name] * 1000:.0f}"
                for name in ("prepare", "forward", "mask", "foreground", "segment")
            )
            + f" | {outside * 1000:.0f} |"
        )
    body = (
        f"One {PHOTO_SIZE[0]}×{PHOTO_SIZE[1]} photo, {torch.get_num_threads()} threads, "
        f"medians of {RUNS}, in ms.\n\n"
        "| engine | prepare | forward | mask | foreground | segment (the stage) | "
        "stage − forward |\n|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    section = f"Inference stage broken down, {cpu_kind(cpu_flags())} (bench/inference_stage.py)"
    publish(section, body, not args.no_write)


if __name__ == "__main__":
    main()
