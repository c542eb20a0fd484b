"""Does a second worker process give a second process's worth of jobs? `python -m bench.scale`

The same number of small distinct photos (40 by default, 480 px long side, all four
effects, fast mode with the generated checkpoint) through a local stack with 1, 2 and 4
worker processes of each kind (gpu and cpu, separate Celery workers on one Redis, as
separate machines would be). The math libraries' threads per process are the
machine's cores divided by the processes of a kind, so the levels share the cores
fairly instead of oversubscribing them. All photos are submitted at once; jobs per
second = photos / (last job finished - first submitted). Writes bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis

from bench.common import publish
from bench.runs import bench_redis_url, local_stack, photo_variants, scratch, stage_seconds
from cli.client import CutfxClient
from cli.stack import thread_env, threads_per_process
from shared.workers import live_workers

PROCESSES = (1, 2, 4)
SMALL_LONG_SIDE = 480
SUBMITTERS = 8
FINISHED = {"succeeded", "failed", "partial", "canceled"}
READY_TIMEOUT_S = 600


def levels() -> list[tuple[int, int]]:
    """(processes of each kind, threads each): the cores shared out at 1, 2 and 4, and one
    process on one thread, which tells what a process loses with fewer threads from
    what processes lose to each other."""
    shared = [(processes, threads_per_process(processes)) for processes in PROCESSES]
    return [*shared, (1, 1)] if threads_per_process(1) > 1 else shared


def wait_for_workers(processes: int) -> None:
    """Until every gpu and cpu process beats as ready (the API's /readyz needs only one)."""
    client = redis.Redis.from_url(os.environ["CUTFX_REDIS_URL"], decode_responses=True)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        ready = [w for w in live_workers(client) if w.ready]
        if all(sum(kind in w.queues for w in ready) >= processes for kind in ("gpu", "cpu")):
            return
        time.sleep(0.5)
    raise TimeoutError(f"{processes} workers of each kind not ready in {READY_TIMEOUT_S} s")


def run_level(client: CutfxClient, photos: list[Path]) -> tuple[float, float]:
    """(jobs per second, median seconds of one photo's inference) for `photos` at once."""
    started = time.monotonic()
    with ThreadPoolExecutor(SUBMITTERS) as pool:
        job_ids = [job["id"] for job in pool.map(client.submit, photos)]
    waiting = set(job_ids)
    while waiting:
        waiting = {job_id for job_id in waiting if client.job(job_id)["status"] not in FINISHED}
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    jobs = [client.job(job_id) for job_id in job_ids]
    failed = [job["id"] for job in jobs if job["status"] != "succeeded"]
    if failed:
        raise RuntimeError(f"{len(failed)} jobs did not succeed, e.g. {failed[0]}")
    # A cutout another worker made too (a lapsed lock) is recorded without its own run.
    inference = [seconds for job in jobs for seconds in stage_seconds(job).get("inference", [])]
    return len(photos) / elapsed, statistics.median(inference)


def at_level(
    workdir: Path, processes: int, threads: int, photos: list[Path]
) -> tuple[float, float]:
    # A clean database: no heartbeat or cache entry of the last level answers for this one.
    redis.Redis.from_url(bench_redis_url()).flushdb()
    with local_stack(
        workdir / f"level-{processes}x{threads}",
        replicas=processes,
        cpu_concurrency=1,
        worker_env=thread_env(threads),
    ) as (_, client):
        wait_for_workers(processes)
        rate, inference_s = run_level(client, photos)
    print(
        f"{processes} process(es) of each kind, {threads} threads each: {rate:.3f} jobs/s, "
        f"inference {inference_s:.2f} s a photo"
    )
    return rate, inference_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    workdir = scratch()
    chosen = levels()
    photos = photo_variants(args.jobs * len(chosen), workdir, SMALL_LONG_SIDE)
    rates = [
        at_level(workdir, processes, threads, photos[i * args.jobs : (i + 1) * args.jobs])
        for i, (processes, threads) in enumerate(chosen)
    ]
    shutil.rmtree(workdir, ignore_errors=True)
    lines = [
        "| processes of each kind | threads per process | jobs/s | vs one process "
        "| inference per photo (median) |",
        "|---|---|---|---|---|",
    ]
    for (processes, threads), (rate, inference_s) in zip(chosen, rates, strict=True):
        lines.append(
            f"| {processes} | {threads} | {rate:.3f} | {rate / rates[0][0]:.2f}× "
            f"| {inference_s:.2f} s |"
        )
    body = (
        f"`python -m bench.scale --jobs {args.jobs}` — {args.jobs} distinct "
        f"{SMALL_LONG_SIDE} px photos per level, all four effects, fast mode with the generated "
        f"checkpoint; N solo gpu and N one-process cpu Celery workers on one Redis, "
        f"{os.cpu_count()} cores shared out as threads.\n\n" + "\n".join(lines) + "\n"
    )
    publish("Scale-out (bench/scale.py)", body, not args.no_write)


if __name__ == "__main__":
    main()
