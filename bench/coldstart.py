"""Seconds from starting workers to ready, and to a first job's first result, with numba's
cache empty and warm: `python -m bench.coldstart`. Writes bench/RESULTS.md.

Target (these 2-core machines, warm cache): ready in under 5 s excluding the
interpreter's start, and a first result within one inference of ready.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import redis

from bench.runs import photo_variants, scratch, use_local_settings
from cli.client import CutfxClient
from cli.stack import LocalStack, free_port
from shared.workers import live_workers


def one_start(workdir: Path, numba_cache: Path, photo: Path) -> dict[str, float]:
    os.environ["NUMBA_CACHE_DIR"] = str(numba_cache)
    redis.Redis.from_url(os.environ["CUTFX_REDIS_URL"]).flushdb()
    stack = LocalStack(workdir / f"logs-{numba_cache.name}", free_port(8400))
    spawned = time.monotonic()
    stack.start()
    try:
        client = CutfxClient(stack.base_url)
        stack.wait_ready(client)
        ready = time.monotonic() - spawned
        (gpu,) = [
            w
            for w in live_workers(redis.Redis.from_url(os.environ["CUTFX_REDIS_URL"]))
            if "gpu" in w.queues
        ]
        submitted = time.monotonic()
        job = client.submit(photo)
        first = next(e for e in client.events(job["id"]) if e.type == "result.succeeded")
        first_result = time.monotonic() - submitted
        inference = float(first.data["result"]["timings"].get("inference_s", 0.0))
    finally:
        stack.stop()
    return {
        "ready_wall_s": ready,
        "ready_in_process_s": float(gpu.ready_after_s or 0.0),
        "first_result_s": first_result,
        "inference_s": inference,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    from bench.common import write_section

    workdir = scratch()
    use_local_settings(workdir)
    photos = photo_variants(2, workdir)
    empty_cache = workdir / "numba-empty"
    results = {"empty": one_start(workdir, empty_cache, photos[0])}
    results["warm"] = one_start(workdir, empty_cache, photos[1])  # filled by the first start
    shutil.rmtree(workdir, ignore_errors=True)
    rows = [
        "| numba cache | ready (wall, from spawn) | ready (in the worker, after imports of Celery) "
        "| first result after submit | of which inference |",
        "|---|---|---|---|---|",
    ]
    for state, figures in results.items():
        rows.append(
            f"| {state} | {figures['ready_wall_s']:.1f} s | {figures['ready_in_process_s']:.1f} s "
            f"| {figures['first_result_s']:.2f} s | {figures['inference_s']:.2f} s |"
        )
    body = (
        "`python -m bench.coldstart` — gpu worker (solo pool) + cpu worker + API started from "
        "nothing, `fast` mode on the CPU, generated checkpoint.\n\n" + "\n".join(rows)
    )
    print(body)
    if not args.no_write:
        write_section("Cold start (bench/coldstart.py)", body)


if __name__ == "__main__":
    main()
