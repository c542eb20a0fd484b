"""Submit → first result → last result through the whole service, against the same work
in one process without queue or storage: `python -m bench.latency`.

Runs a local stack (gpu, cpu and webhooks workers, gunicorn) on the generated
checkpoint in `fast` mode, submits distinct photos one at a time (no cache
hits), follows each job's events, and writes medians to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import io
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import median_ms, write_section
from bench.runs import LONG_SIDE, deployment, photo_variants, scratch
from cli import service_settings
from cli.client import CutfxClient


def through_the_service(client: CutfxClient, photos: list[Path]) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {"accepted": [], "first": [], "primary": [], "last": []}
    for photo in photos:
        started = time.monotonic()
        job = client.submit(photo, primary="popart")
        timings["accepted"].append(time.monotonic() - started)
        for event in client.events(job["id"]):
            elapsed = time.monotonic() - started
            if event.type == "result.succeeded" and event.data["name"] == "cutout":
                timings["first"].append(elapsed)
            if event.type == "result.succeeded" and event.data["name"] == "popart":
                timings["primary"].append(elapsed)
            if event.type == "job.finished":
                timings["last"].append(elapsed)
    return timings


def in_one_process(photos: list[Path]) -> list[float]:
    from effects import EFFECT_NAMES, apply_effect, get_effect
    from shared.output import OutputFormat, encode_lossless, encode_rgba
    from worker.model import load_model

    model = load_model(service_settings())
    model.warm_up()
    times = []
    for photo in photos:
        started = time.monotonic()
        rgb = np.asarray(Image.open(io.BytesIO(photo.read_bytes())).convert("RGB"))
        cutout = model.segment(rgb)
        encode_lossless(cutout)
        encode_rgba(cutout, OutputFormat())
        for name in EFFECT_NAMES:
            encode_rgba(apply_effect(name, cutout), OutputFormat(), get_effect(name).flat_colours)
        times.append(time.monotonic() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    workdir = scratch()
    photos = photo_variants(2 * args.jobs, workdir)
    with deployment(None, workdir) as client:
        service = through_the_service(client, photos[: args.jobs])
    alone = in_one_process(photos[args.jobs :])
    shutil.rmtree(workdir, ignore_errors=True)
    rows = [
        "| measure | median |",
        "|---|---|",
        f"| submit answered (202) | {median_ms(service['accepted']):.0f} ms |",
        f"| submit → first result (cutout) event | {median_ms(service['first']):.0f} ms |",
        f"| submit → primary effect (popart) event | {median_ms(service['primary']):.0f} ms |",
        f"| submit → last result, job finished | {median_ms(service['last']):.0f} ms |",
        f"| same work in one process (segment, 4 effects, 6 encodes) | {median_ms(alone):.0f} ms |",
    ]
    body = (
        f"`python -m bench.latency --jobs {args.jobs}` — {LONG_SIDE}×681 photo, `fast` mode "
        "on the CPU with the generated checkpoint, one job at a time on idle workers "
        "(gpu: solo pool; cpu: prefork ×2), local storage.\n\n" + "\n".join(rows)
    )
    print(body)
    if not args.no_write:
        write_section("Latency through the service (bench/latency.py)", body)


if __name__ == "__main__":
    main()
