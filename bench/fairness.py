"""Fair share, measured: `python -m bench.fairness [--burst 50] [--write]`.

Two API keys on a local stack (one solo gpu worker, fast mode, the generated checkpoint,
effects=color). Key A enqueues a burst of distinct photos, as `cutfx batch` does; key B
then submits one photo, as a shopper does. Measured:

- B's time to its cutout behind A's burst, A in the interactive lane and in the batch
  lane, against B on an idle service;
- A's burst throughput in the batch lane against the interactive lane (B idle);
- 300 event streams from A against an API of 200 connections: how long B's next request
  takes, with the per-key stream cap and without it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from bench.common import publish
from bench.runs import local_stack, photo_variants, scratch
from cli.client import CutfxClient

KEY_A = "sk_bench_tenant_a_0123456789"
KEY_B = "sk_bench_tenant_b_9876543210"
#: The API process's connections, and the streams key A opens against them.
API_CONNECTIONS = 200
STREAMS_FROM_A = 300
B_REQUEST_TIMEOUT_S = 10.0
#: The streamed job waits behind this many: open long enough for every stream.
STREAMED_BEHIND = 10


def cutout_seconds(client: CutfxClient, photo: Path, **form: str) -> float:
    """Submit and follow the events until the cutout: what a shopper's page waits for."""
    started = time.monotonic()
    job = client.submit(photo, effects="color", **form)
    for event in client.events(job["id"]):
        if event.type == "result.succeeded" and event.data["name"] == "cutout":
            return time.monotonic() - started
    raise RuntimeError(f"job {job['id']} gave no cutout")


def burst(client: CutfxClient, photos: list[Path], lane: str) -> list[str]:
    return [client.submit(photo, effects="color", lane=lane)["id"] for photo in photos]


def wait_all(client: CutfxClient, job_ids: list[str]) -> None:
    for job_id in job_ids:
        for event in client.events(job_id):
            if event.type == "job.finished":
                break


def b_behind_a(a: CutfxClient, b: CutfxClient, photos: list[Path], lane: str) -> float:
    queued = burst(a, photos[:-1], lane)
    seconds = cutout_seconds(b, photos[-1])
    wait_all(a, queued)
    return seconds


def throughput(a: CutfxClient, photos: list[Path], lane: str) -> float:
    started = time.monotonic()
    wait_all(a, burst(a, photos, lane))
    return len(photos) / (time.monotonic() - started)


def fairness_rows(workdir: Path, size: int, photos: Iterator[Path]) -> list[str]:
    def take(count: int) -> list[Path]:
        return [next(photos) for _ in range(count)]

    settings = {"CUTFX_API_KEYS": f"{KEY_A},{KEY_B}", "CUTFX_MAX_ACTIVE_JOBS_PER_KEY": "1000"}
    with local_stack(workdir, settings=settings) as (stack, _):
        a = CutfxClient(stack.base_url, KEY_A)
        b = CutfxClient(stack.base_url, KEY_B)
        idle = statistics.median(cutout_seconds(b, photo) for photo in take(3))
        same_lane = b_behind_a(a, b, take(size + 1), "interactive")
        batch_lane = b_behind_a(a, b, take(size + 1), "batch")
        interactive_rate = throughput(a, take(size), "interactive")
        batch_rate = throughput(a, take(size), "batch")
    return [
        "| B's cutout | seconds | × idle |",
        "|---|---|---|",
        f"| idle service | {idle:.1f} | 1.00 |",
        f"| behind A's {size}, both interactive | {same_lane:.1f} | {same_lane / idle:.2f} |",
        f"| behind A's {size} in the batch lane | {batch_lane:.1f} | {batch_lane / idle:.2f} |",
        "",
        f"A's {size} alone: {batch_rate:.3f} jobs/s in the batch lane, {interactive_rate:.3f} "
        f"in the interactive lane ({batch_rate / interactive_rate:.2f}×).",
    ]


def open_streams(base_url: str, job_id: str, count: int) -> list[Any]:
    """`count` event streams from key A, held open; each one's status code."""

    def one(_: int) -> Any:
        try:
            return requests.get(
                f"{base_url}/v1/jobs/{job_id}/events?keepalive_ms=1000",
                headers={"Authorization": f"Bearer {KEY_A}"},
                stream=True,
                timeout=(5, 60),
            )
        except requests.RequestException as exc:
            return exc

    with ThreadPoolExecutor(64) as pool:
        return list(pool.map(one, range(count)))


def b_served_in(base_url: str, job_id: str, tries: int = 5) -> str:
    """The median time B's GET of its job takes while A's streams are open."""
    seconds = []
    for _ in range(tries):
        started = time.monotonic()
        try:
            requests.get(
                f"{base_url}/v1/jobs/{job_id}",
                headers={"Authorization": f"Bearer {KEY_B}"},
                timeout=B_REQUEST_TIMEOUT_S,
            ).raise_for_status()
        except requests.RequestException as exc:
            return f"no answer in {B_REQUEST_TIMEOUT_S:g} s ({type(exc).__name__})"
        seconds.append(time.monotonic() - started)
    return f"{statistics.median(seconds):.3f} s (median of {tries})"


def streams_row(workdir: Path, cap: int, photos: list[Path]) -> str:
    settings = {
        "CUTFX_API_KEYS": f"{KEY_A},{KEY_B}",
        "CUTFX_API_CONNECTIONS": str(API_CONNECTIONS),
        "CUTFX_API_WORKERS": "1",
        "CUTFX_MAX_STREAMS_PER_KEY": str(cap),
    }
    with local_stack(workdir, settings=settings) as (stack, _):
        a, b = CutfxClient(stack.base_url, KEY_A), CutfxClient(stack.base_url, KEY_B)
        # The last of a burst stays unfinished while the streams are open on it.
        a_job = burst(a, photos[:-1], "interactive")[-1]
        b_job = b.submit(photos[-1], effects="color")["id"]
        streams = open_streams(stack.base_url, a_job, STREAMS_FROM_A)
        served = b_served_in(stack.base_url, b_job)
        codes = [getattr(s, "status_code", "error") for s in streams]
        for stream in streams:
            if hasattr(stream, "close"):
                stream.close()
    opened = codes.count(200)
    refused = codes.count(429)
    return (
        f"| {cap} | {opened} open, {refused} refused (429), "
        f"{len(codes) - opened - refused} failed | {served} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=50, help="photos in A's burst")
    parser.add_argument("--write", action="store_true", help="record in bench/RESULTS.md")
    args = parser.parse_args()
    workdir = scratch()
    # Every photo new to the cache (the stacks share Redis database 12): made once.
    per_streams_run = STREAMED_BEHIND + 1
    photos = iter(photo_variants(4 * args.burst + 8 + 2 * per_streams_run, workdir))
    rows = fairness_rows(workdir, args.burst, photos)
    rows += [
        "",
        f"| streams cap per key | A's {STREAMS_FROM_A} streams | B's next request |",
        "|---|---|---|",
    ]
    for cap in (100_000, 100):
        rows.append(streams_row(workdir, cap, [next(photos) for _ in range(per_streams_run)]))
    publish("Fair share (bench/fairness.py)", "\n".join(rows), args.write)


if __name__ == "__main__":
    main()
