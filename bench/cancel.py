"""Time from DELETE /v1/jobs/<id> to the canceled event: `python -m bench.cancel`.

Runs the API under gunicorn (gevent, one process) on its own Redis database, with no
workers, so every job waits in the queue. For each of N jobs a subscriber holds the
job's event stream open; the job is canceled, and the bench measures the DELETE's own
latency and the time until the subscriber has job.finished with status canceled.
Writes bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import redis
import requests
from PIL import Image

from bench.common import median_ms, p95_ms, write_section
from bench.sse_subscribers import REDIS_URL, start_api
from cli.client import parse_sse
from cli.stack import free_port


def photo(index: int) -> bytes:
    pixels = np.random.default_rng(index).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def watch_until_canceled(url: str, connected: threading.Event, seen_at: list[float]) -> None:
    with requests.get(url, stream=True, timeout=(10, 60)) as response:
        connected.set()
        for event in parse_sse(response.iter_lines(decode_unicode=True)):
            if event.type == "job.finished" and event.data["status"] == "canceled":
                seen_at.append(time.perf_counter())
                return


def cancel_one(base: str, index: int) -> tuple[float, float]:
    """(DELETE round trip, DELETE sent → canceled event received), in seconds."""
    submitted = requests.post(
        f"{base}/v1/jobs", files={"image": (f"p{index}.png", photo(index))}, timeout=30
    ).json()
    connected = threading.Event()
    seen_at: list[float] = []
    events_url = submitted["links"]["events"]
    watcher = threading.Thread(target=watch_until_canceled, args=(events_url, connected, seen_at))
    watcher.start()
    connected.wait(10)
    time.sleep(0.05)  # the stream is reading before the cancel is sent
    sent = time.perf_counter()
    answer = requests.delete(submitted["links"]["self"], timeout=30)
    answered = time.perf_counter()
    watcher.join(30)
    if answer.json()["status"] != "canceled" or not seen_at:
        raise RuntimeError(f"job {submitted['id']} was not canceled: {answer.text[:200]}")
    return answered - sent, seen_at[0] - sent


def table(figures: dict[str, float]) -> str:
    rows = [
        ("DELETE round trip", "delete"),
        ("DELETE sent → `job.finished` (canceled) at the subscriber", "to_event"),
    ]
    lines = ["| | median | p95 |", "|---|---|---|"]
    for label, name in rows:
        lines.append(
            f"| {label} | {figures[name + '_median_ms']} ms | {figures[name + '_p95_ms']} ms |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100)
    args = parser.parse_args()
    redis.Redis.from_url(REDIS_URL).flushdb()
    port = free_port(8131)
    with tempfile.TemporaryDirectory() as storage:
        api = start_api(port, Path(storage))
        try:
            timings = [cancel_one(f"http://127.0.0.1:{port}", i) for i in range(args.jobs)]
        finally:
            api.terminate()
            api.wait(10)
    round_trips = [t[0] for t in timings]
    to_event = [t[1] for t in timings]
    figures = {
        "jobs": args.jobs,
        "delete_median_ms": round(median_ms(round_trips), 1),
        "delete_p95_ms": round(p95_ms(round_trips), 1),
        "to_event_median_ms": round(median_ms(to_event), 1),
        "to_event_p95_ms": round(p95_ms(to_event), 1),
    }
    print(json.dumps(figures))
    write_section(
        "Cancel: DELETE to the canceled event",
        f"""`python -m bench.cancel --jobs {args.jobs}` (gunicorn gevent, one API process, no
workers: each job is queued; a subscriber holds its event stream open)

{table(figures)}""",
    )


if __name__ == "__main__":
    main()
