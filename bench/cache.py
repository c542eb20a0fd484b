"""A cold job against the same job repeated: `python -m bench.cache`.

Target: a repeat answered in under 50 ms at the API (the 202 itself carries
every result), over 50 times faster than the cold job. Writes bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from bench.common import median_ms, p95_ms, write_section
from bench.runs import deployment, photo_variants, scratch
from cli.client import CutfxClient

TARGET_REPEAT_MS = 50
TARGET_SPEEDUP = 50


def cold_then_repeat(client: CutfxClient, photo: Path, repeats: int) -> tuple[float, list[float]]:
    started = time.monotonic()
    job = client.submit(photo)
    for event in client.events(job["id"]):
        if event.type == "job.finished":
            break
    cold = time.monotonic() - started
    repeat_times = []
    for _ in range(repeats):
        started = time.monotonic()
        again = client.submit(photo)
        repeat_times.append(time.monotonic() - started)
        if again["status"] != "succeeded":
            raise RuntimeError(f"repeat was not served from the cache: {again['status']}")
    return cold, repeat_times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    workdir = scratch()
    colds: list[float] = []
    repeats: list[float] = []
    with deployment(None, workdir) as client:
        for photo in photo_variants(args.jobs, workdir):
            cold, repeat_times = cold_then_repeat(client, photo, args.repeats)
            colds.append(cold)
            repeats.extend(repeat_times)
    shutil.rmtree(workdir, ignore_errors=True)
    speedup = median_ms(colds) / median_ms(repeats)
    body = (
        f"`python -m bench.cache --jobs {args.jobs} --repeats {args.repeats}` — 1024×681 photos, "
        "`fast` mode on the CPU, gunicorn + local storage, client on loopback.\n\n"
        "| measure | median | p95 |\n|---|---|---|\n"
        f"| cold job, submit → job.finished | {median_ms(colds):.0f} ms "
        f"| {p95_ms(colds):.0f} ms |\n"
        f"| repeat, submit → 202 with every result | {median_ms(repeats):.1f} ms "
        f"| {p95_ms(repeats):.1f} ms |\n\n"
        f"Speed-up {speedup:.0f}× (targets: repeat < {TARGET_REPEAT_MS} ms, > {TARGET_SPEEDUP}×; "
        "the replaced service's cache made repeats 0.7× as fast)."
    )
    print(body)
    if not args.no_write:
        write_section("Cache: cold against repeat (bench/cache.py)", body)


if __name__ == "__main__":
    main()
