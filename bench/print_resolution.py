"""A print file: a 12 MP photo's cutout and one effect made at its own size
(resolution=original), stage by stage, with the process's peak memory; and how far the
mask's edge sits from the truth with the guided upsample against a bilinear one.

    python -m bench.print_resolution [--write]
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable
from typing import Any

import cv2

from bench.common import publish, random_checkpoint
from effects import apply_effect
from shared.output import PRINT_DPI, OutputFormat, encode_lossless, encode_rgba
from tests.worker.edges import bilinear, disc_scene, edge_error_px, network_mask
from worker.model import guided_upsample

#: A 12 MP phone photo (4000 × 3000), and the issue's 6000 × 4000 edge test.
PHOTO_SIZE = (4000, 3000)
EDGE_SIZE = (6000, 4000)
MAX_SIDE = 2048


def timed(stages: dict[str, float], name: str, call: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    value = call()
    stages[name] = time.perf_counter() - started
    return value


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def render_rows() -> list[str]:
    from cli import service_settings
    from worker.model import load_model

    settings = service_settings().with_overrides(
        model_mode="fast", model_ckpt=str(random_checkpoint("fast")), precision="fp32"
    )
    model = load_model(settings)
    before = peak_rss_mib()
    photo = disc_scene(*PHOTO_SIZE).photo
    scale = MAX_SIDE / max(PHOTO_SIZE)
    size = (round(PHOTO_SIZE[0] * scale), round(PHOTO_SIZE[1] * scale))
    processed: Any = cv2.resize(photo, size, interpolation=cv2.INTER_AREA)
    stages: dict[str, float] = {}
    (logits,) = timed(
        stages, "forward (at 2048)", lambda: model.saliency([model.prepare(processed)])
    )
    cutout = timed(
        stages, "mask + colours at 12 MP", lambda: model.finish(processed, logits, photo)
    )
    timed(stages, "cutout PNG (lossless)", lambda: encode_lossless(cutout))
    coloured = timed(stages, "effect color", lambda: apply_effect("color", cutout, {}))
    webp = OutputFormat(name="webp")
    timed(stages, "WebP at 300 dpi", lambda: encode_rgba(coloured, webp, dpi=PRINT_DPI))
    rows = ["| stage, 12 MP (4000 × 3000) | seconds |", "|---|---|"]
    rows += [f"| {name} | {seconds:.2f} |" for name, seconds in stages.items()]
    rows.append(f"| **total** | **{sum(stages.values()):.2f}** |")
    rows.append("")
    rows.append(
        f"Peak resident memory: {peak_rss_mib():.0f} MiB, of which the model and libraries "
        f"{before:.0f} MiB before the photo."
    )
    return rows


def edge_rows() -> list[str]:
    scene = disc_scene(*EDGE_SIZE)
    low = network_mask(scene)
    started = time.perf_counter()
    guided = guided_upsample(low, scene.photo)
    guided_s = time.perf_counter() - started
    plain = bilinear(low, *EDGE_SIZE)
    return [
        "| upsample of a 384² mask to 6000 × 4000 | edge error (p99) | seconds |",
        "|---|---|---|",
        f"| guided (worker/model.py) | {edge_error_px(scene, guided):.2f} px | {guided_s:.2f} |",
        f"| bilinear | {edge_error_px(scene, plain):.2f} px | — |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="record in bench/RESULTS.md")
    args = parser.parse_args()
    body = "\n".join([*edge_rows(), "", *render_rows()])
    publish("Print resolution (bench/print_resolution.py)", body, args.write)


if __name__ == "__main__":
    main()
