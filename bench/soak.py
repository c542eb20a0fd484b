"""Memory over many jobs: `python -m bench.soak [--jobs 1000] [--streams 300 --stream-minutes 10]`.

Starts a local stack (the gpu, cpu and webhooks workers and a gunicorn API, as
the demo does), runs `--jobs` small distinct photos through it (all four
effects, `--in-flight` at a time) and samples the resident memory (RSS) of each
process kind after every job: the gpu worker, the cpu workers (parent and pool
processes together) and the API. Then it holds `--streams` open event streams
on the API for `--stream-minutes` and samples the API's RSS each minute. The
growth from job 100 to the last job is what a leak would show; the goal is
under 10 %. Writes bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests
from PIL import Image

from bench.common import write_section
from bench.runs import local_stack, scratch
from cli.client import CutfxClient
from cli.stack import LocalStack

PHOTO_SIZE = (160, 120)
BASELINE_JOB = 100
KINDS = ("worker-gpu", "worker-cpu", "api")


def photo(index: int) -> bytes:
    rng = np.random.default_rng(index)
    pixels = rng.integers(0, 256, (PHOTO_SIZE[1], PHOTO_SIZE[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MB."""
    total = 0
    for member in [pid, *descendants(pid)]:
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        found.extend(children.get(current, []))
        frontier.extend(children.get(current, []))
    return found


def run_job(client: CutfxClient, index: int) -> str:
    files = {"image": (f"pet-{index}.png", photo(index))}
    answer = client.session.post(f"{client.base_url}/v1/jobs", files=files, timeout=60)
    answer.raise_for_status()
    job_id = answer.json()["id"]
    while True:
        job = client.session.get(f"{client.base_url}/v1/jobs/{job_id}?wait=20", timeout=60).json()
        if job["status"] in ("succeeded", "failed", "partial"):
            return str(job["status"])


def soak_jobs(
    stack: LocalStack, client: CutfxClient, jobs: int, in_flight: int
) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {kind: [] for kind in KINDS}
    statuses: list[str] = []
    with ThreadPoolExecutor(in_flight) as pool:
        for status in pool.map(lambda i: run_job(client, i), range(jobs)):
            statuses.append(status)
            for kind in KINDS:
                samples[kind].append(rss_mb(stack.processes[kind].pid))
            if len(statuses) % 100 == 0:
                print(
                    f"{len(statuses)} jobs, RSS "
                    + ", ".join(f"{k} {v[-1]:.0f} MB" for k, v in samples.items()),
                    flush=True,
                )
    samples["failed"] = [float(sum(s != "succeeded" for s in statuses))]
    return samples


def unfinished_job() -> str:
    """A job record that stays queued (nothing is sent to a worker), so its event
    streams stay open on keep-alives, as a page waiting on a slow job holds one."""
    import os

    import redis

    from shared.jobs import JobRequest, JobStore, new_job_id
    from shared.output import OutputFormat

    client = redis.Redis.from_url(os.environ["CUTFX_REDIS_URL"], decode_responses=True)
    job_id = new_job_id()
    request = JobRequest(
        "0" * 64, "inputs/00/x.png", 10, 10, ("color",), "color", OutputFormat(), {}
    )
    JobStore(client, 3600).create(job_id, request)
    return job_id


def hold_streams(
    stack: LocalStack, client: CutfxClient, streams: int, minutes: float
) -> list[float]:
    url = f"{client.base_url}/v1/jobs/{unfinished_job()}/events?keepalive_ms=15000"
    stop = threading.Event()

    def subscribe() -> None:
        with requests.get(url, stream=True, timeout=120) as response:
            for _ in response.iter_lines():
                if stop.is_set():
                    return

    threads = [threading.Thread(target=subscribe, daemon=True) for _ in range(streams)]
    for thread in threads:
        thread.start()
    api_rss = []
    for _ in range(int(minutes)):
        time.sleep(60)
        api_rss.append(rss_mb(stack.processes["api"].pid))
        print(f"{streams} streams: API RSS {api_rss[-1]:.0f} MB", flush=True)
    stop.set()
    return api_rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--streams", type=int, default=300)
    parser.add_argument("--stream-minutes", type=float, default=10)
    args = parser.parse_args()
    started = time.monotonic()
    with local_stack(scratch(), preferred_port=8700) as (stack, client):
        samples = soak_jobs(stack, client, args.jobs, args.in_flight)
        streams = (
            hold_streams(stack, client, args.streams, args.stream_minutes) if args.streams else []
        )
    report(samples, streams, args, time.monotonic() - started)


def growth(values: list[float]) -> str:
    base = values[min(BASELINE_JOB, len(values)) - 1]
    return f"{base:.0f} MB → {values[-1]:.0f} MB ({(values[-1] - base) / base * 100:+.1f} %)"


def report(
    samples: dict[str, list[float]], streams: list[float], args: argparse.Namespace, took_s: float
) -> None:
    rows = "\n".join(
        f"| {kind} | {growth(samples[kind])} | {max(samples[kind]):.0f} MB |" for kind in KINDS
    )
    stream_line = (
        f"API RSS with {args.streams} open event streams, sampled each minute for "
        f"{args.stream_minutes:g} min: " + ", ".join(f"{v:.0f}" for v in streams) + " MB."
        if streams
        else "No stream phase was run."
    )
    body = f"""
`python -m bench.soak --jobs {args.jobs} --in-flight {args.in_flight}`: {args.jobs} jobs of a
{PHOTO_SIZE[0]}×{PHOTO_SIZE[1]} photo (each distinct, all four effects, fast mode, the generated
checkpoint), {args.in_flight} in flight, one gpu worker (solo), one cpu worker (prefork, 2), one
gunicorn gevent API; RSS of each process kind (pool processes included) after each job.
{samples["failed"][0]:.0f} jobs did not succeed; the run took {took_s / 60:.0f} min.

| process | RSS at job {BASELINE_JOB} → at job {args.jobs} (growth) | peak |
|---|---|---|
{rows}

{stream_line}
"""
    print(body)
    write_section("Soak: memory over many jobs", body)


if __name__ == "__main__":
    main()
