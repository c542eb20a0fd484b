"""Hundreds of open event streams on one gunicorn gevent worker: `python -m bench.sse_subscribers`.

Opens N subscribers to one job's events (loopback only), then finishes the job's
results one by one and measures when every subscriber has every event, while a
prober times ordinary GET /healthz requests. Writes bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import redis
import requests

from bench.common import median_ms, p95_ms, write_section
from cli.client import parse_sse
from cli.stack import free_port
from shared.jobs import CUTOUT, JobRequest, JobStore, ResultRecord, StoredObject, new_job_id
from shared.output import OutputFormat

REDIS_URL = os.environ.get("CUTFX_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
EFFECTS = ("color", "enhancedblackwhite", "popart", "dithering")


def start_api(port: int, storage: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CUTFX_ENV": "development",
        "CUTFX_READ_RATE_LIMIT": "1000000/minute",
        "CUTFX_SUBMIT_RATE_LIMIT": "1000000/minute",
        "CUTFX_REDIS_URL": REDIS_URL,
        "CUTFX_LOCAL_STORAGE_DIR": str(storage),
    }
    command = [
        sys.executable, "-m", "cli", "serve", "--bind", f"127.0.0.1:{port}", "--workers", "1",
    ]  # fmt: skip
    log = Path("var/logs/bench-api.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return process
        except requests.RequestException:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("gunicorn did not start")


def subscriber(
    url: str, connected: threading.Barrier, done: list[float], errors: list[str]
) -> None:
    try:
        with requests.get(url, stream=True, timeout=(10, 120)) as response:
            if response.status_code != 200:
                errors.append(f"HTTP {response.status_code}")
            lines = response.iter_lines(decode_unicode=True)
            connected.wait()
            count = sum(1 for event in parse_sse(lines) if event.type.startswith("result."))
            if count != 1 + len(EFFECTS):
                errors.append(f"got {count} results")
            done.append(time.monotonic())
    except Exception as exc:  # a bench reports every kind of failure
        errors.append(repr(exc))


def probe(base: str, stop: threading.Event, latencies: list[float]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        requests.get(f"{base}/healthz", timeout=10)
        latencies.append(time.perf_counter() - started)
        time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=300)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    client.flushdb()
    jobs = JobStore(client, 600)
    job_id = new_job_id()
    request = JobRequest("0" * 64, "inputs/x.png", 10, 10, EFFECTS, EFFECTS[0], OutputFormat(), {})
    jobs.create(job_id, request)
    port = free_port(8100)
    api = start_api(port, Path("var/bench-storage"))
    base = f"http://127.0.0.1:{port}"
    url = f"{base}/v1/jobs/{job_id}/events"
    connected = threading.Barrier(args.subscribers + 1)
    done: list[float] = []
    errors: list[str] = []
    latencies: list[float] = []
    stop = threading.Event()
    threads = [
        threading.Thread(target=subscriber, args=(url, connected, done, errors), daemon=True)
        for _ in range(args.subscribers)
    ]
    try:
        started = time.monotonic()
        for thread in threads:
            thread.start()
        connected.wait(timeout=120)
        connect_s = time.monotonic() - started
        prober = threading.Thread(target=probe, args=(base, stop, latencies), daemon=True)
        prober.start()
        time.sleep(0.5)
        finished_at = time.monotonic()
        for name in (CUTOUT, *EFFECTS):
            stored = StoredObject(f"results/00/{name}.png", "image/png", 1, 10, 10)
            jobs.succeed_result(job_id, ResultRecord(name=name), stored, cached=False)
            time.sleep(0.1)
        for thread in threads:
            thread.join(timeout=120)
        stop.set()
        prober.join()
    finally:
        api.terminate()
        api.wait()
        client.flushdb()
    last = max(done) - finished_at if done else float("nan")
    summary = (
        f"{len(done)}/{args.subscribers} subscribers got all {1 + len(EFFECTS)} result events "
        f"and the final one; {len(errors)} errors. All connected in {connect_s:.2f} s; the last "
        f"subscriber had the last event {last:.2f} s after the first result was written "
        f"(results written 0.1 s apart). GET /healthz during the streams: median "
        f"{median_ms(latencies):.1f} ms, p95 {p95_ms(latencies):.1f} ms "
        f"over {len(latencies)} requests."
    )
    print(summary)
    if errors:
        print("errors:", errors[:5])
    if not args.no_write:
        write_section(
            "Concurrent event-stream subscribers (bench/sse_subscribers.py)",
            "`python -m bench.sse_subscribers --subscribers "
            f"{args.subscribers}` — one gunicorn gevent worker (`cutfx serve`), "
            "loopback.\n\n" + summary,
        )


if __name__ == "__main__":
    main()
