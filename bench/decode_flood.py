"""Big uploads do not freeze the API: `python -m bench.decode_flood`.

Starts one gunicorn gevent API process (no workers needed: a submit decodes,
stores and queues), then submits eight 7900×5000 PNGs at once (each about
130 KB, each different so no cache answers) while a prober times GET /healthz
every 20 ms. Before decoding ran off the event loop, /healthz answered after
5.9 s meanwhile. Writes bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import io
import statistics
import threading
import time
from pathlib import Path

import numpy as np
import redis
import requests
from PIL import Image

from bench.common import p95, write_section
from bench.sse_subscribers import REDIS_URL, start_api
from cli.stack import free_port

WIDTH, HEIGHT = 7900, 5000
PROBE_INTERVAL_S = 0.02


def big_white_png(seed: int) -> bytes:
    pixels = np.full((HEIGHT, WIDTH, 3), 255, dtype=np.uint8)
    pixels[0, 0] = (seed % 256, seed // 256 % 256, 0)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def probe(base: str, stop: threading.Event, latencies: list[float]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        requests.get(f"{base}/healthz", timeout=30)
        latencies.append(time.perf_counter() - started)
        time.sleep(PROBE_INTERVAL_S)


def submit(base: str, data: bytes, answers: list[tuple[int, str]]) -> None:
    response = requests.post(
        f"{base}/v1/jobs",
        files={"image": ("big.png", data)},
        data={"effects": "color"},
        timeout=120,
    )
    answers.append((response.status_code, response.headers.get("Server-Timing", "")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uploads", type=int, default=8)
    args = parser.parse_args()
    redis.Redis.from_url(REDIS_URL).flushdb()
    photos = [big_white_png(seed) for seed in range(args.uploads)]
    port = free_port(8200)
    api = start_api(port, Path("var/bench-storage"))
    base = f"http://127.0.0.1:{port}"
    latencies: list[float] = []
    answers: list[tuple[int, str]] = []
    stop = threading.Event()
    try:
        requests.get(f"{base}/v1/effects", timeout=10)
        prober = threading.Thread(target=probe, args=(base, stop, latencies), daemon=True)
        prober.start()
        time.sleep(0.5)
        flood = [threading.Thread(target=submit, args=(base, p, answers)) for p in photos]
        started = time.perf_counter()
        for thread in flood:
            thread.start()
        for thread in flood:
            thread.join()
        flood_s = time.perf_counter() - started
        time.sleep(0.5)
        stop.set()
        prober.join()
    finally:
        api.terminate()
        api.wait(timeout=30)
    report(photos, answers, latencies, flood_s)


def report(
    photos: list[bytes],
    answers: list[tuple[int, str]],
    latencies: list[float],
    flood_s: float,
) -> None:
    codes = sorted(code for code, _ in answers)
    inputs = [
        float(part.split("dur=")[1]) / 1000
        for _, timing in answers
        for part in timing.split(", ")
        if part.startswith("input;")
    ]
    input_s = statistics.median(inputs) if inputs else 0.0
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    body = f"""
`python -m bench.decode_flood`: {len(photos)} submits at once of a {WIDTH}×{HEIGHT} PNG
(~{statistics.mean(len(p) for p in photos) / 1024:.0f} KB each), one gunicorn gevent process,
`CUTFX_DECODE_CONCURRENCY` at its default; /healthz probed every {PROBE_INTERVAL_S * 1000:.0f} ms.

| figure | value |
|---|---|
| submit answers | {", ".join(str(c) for c in codes)} |
| flood wall time | {flood_s:.2f} s |
| `input` stage per accepted submit (median, waiting for a slot included) | {input_s:.2f} s |
| /healthz probes during the flood | {len(latencies)} |
| /healthz median | {statistics.median(latencies) * 1000:.1f} ms |
| /healthz p95 | {p95(latencies) * 1000:.1f} ms |
| /healthz p99 | {p99 * 1000:.1f} ms |
| /healthz max | {max(latencies) * 1000:.1f} ms |

Before the decode pool (decoding on the event loop) one such flood held /healthz for 5.9 s.
A submit waits up to 10 s for one of the pool's slots, then gets 503 `busy` with Retry-After.
"""
    print(body)
    write_section("Decode flood: /healthz while big uploads decode", body)


if __name__ == "__main__":
    main()
