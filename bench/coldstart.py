"""Seconds from starting workers to ready, and to a first job's first result, from empty
caches and again warm: `python -m bench.coldstart`. Writes bench/RESULTS.md.

Empty caches are a fresh clone's: no generated checkpoint (made first, and timed apart)
and an empty numba cache (nothing of cutfx's compiles any more: a start that did would
show here). Warm is the same stack started a second time, the OS's file cache full.

Targets (these 2-core machines): a gpu and a cpu worker from empty caches ready in
15 s; a gpu worker started alone, warm, ready in under 5 s from its spawn; a first
result within one inference of ready.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import redis

from bench.runs import photo_variants, scratch, use_local_settings
from cli import service_settings
from cli.client import CutfxClient
from cli.stack import LocalStack, free_port, worker_commands
from shared.workers import WorkerStatus, live_workers

#: How often the alone start looks for the heartbeat: the figure's resolution.
POLL_S = 0.02
ALONE_TIMEOUT_S = 300
ALONE_STARTS = 5


def ready_gpu_worker(client: redis.Redis) -> WorkerStatus | None:
    return next((w for w in live_workers(client) if "gpu" in w.queues and w.ready), None)


def fresh_checkpoint(cache_dir: Path) -> float:
    """Seconds to generate the random checkpoint into an empty cache, as a fresh clone's
    first demo does; the stack then loads it."""
    from worker.checkpoint import ensure_random_checkpoint

    started = time.monotonic()
    checkpoint = ensure_random_checkpoint("fast", cache_dir)
    os.environ["CUTFX_MODEL_CKPT"] = str(checkpoint)
    return time.monotonic() - started


def stack_start(workdir: Path, label: str, numba_cache: Path, photo: Path) -> dict[str, float]:
    """The API, gpu and cpu workers started together, then one job."""
    os.environ["NUMBA_CACHE_DIR"] = str(numba_cache)
    store = redis.Redis.from_url(os.environ["CUTFX_REDIS_URL"])
    store.flushdb()
    batch_max = service_settings().batch_max
    stack = LocalStack(workdir / f"logs-{label}", free_port(8400), batch_max=batch_max)
    spawned = time.monotonic()
    stack.start()
    try:
        client = CutfxClient(stack.base_url)
        stack.wait_ready(client)
        ready = time.monotonic() - spawned
        gpu = ready_gpu_worker(store)
        if gpu is None:
            raise RuntimeError("the API is ready but no gpu worker's heartbeat says so")
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


def alone_start(workdir: Path, numba_cache: Path) -> tuple[float, float]:
    """One gpu worker on an idle machine: seconds from spawn until its heartbeat says
    ready, and the worker's own figure (from its first line of Python)."""
    store = redis.Redis.from_url(os.environ["CUTFX_REDIS_URL"])
    store.flushdb()
    command = worker_commands()["worker-gpu"]
    with (workdir / "alone.log").open("ab") as log:
        spawned = time.monotonic()
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "NUMBA_CACHE_DIR": str(numba_cache)},
        )
        try:
            while (status := ready_gpu_worker(store)) is None:
                if process.poll() is not None or time.monotonic() - spawned > ALONE_TIMEOUT_S:
                    raise RuntimeError(f"the gpu worker did not get ready; see {log.name}")
                time.sleep(POLL_S)
            wall = time.monotonic() - spawned
        finally:
            process.terminate()
            process.wait(timeout=60)
    return wall, float(status.ready_after_s or 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    from bench.common import publish

    workdir = scratch()
    use_local_settings(workdir)
    photos = photo_variants(2, workdir)
    numba_cache = workdir / "numba-empty"
    checkpoint_s = fresh_checkpoint(workdir / "checkpoints")
    stacks = {"empty": stack_start(workdir, "empty", numba_cache, photos[0])}
    stacks["warm"] = stack_start(workdir, "warm", numba_cache, photos[1])
    alone = [alone_start(workdir, numba_cache) for _ in range(ALONE_STARTS)]
    compiled = any(numba_cache.rglob("*.nbi"))
    shutil.rmtree(workdir, ignore_errors=True)
    rows = [
        "| caches | ready (wall, from spawn) | ready (in the worker) "
        "| first result after submit | of which inference |",
        "|---|---|---|---|---|",
    ]
    for state, figures in stacks.items():
        rows.append(
            f"| {state} | {figures['ready_wall_s']:.1f} s | {figures['ready_in_process_s']:.1f} s "
            f"| {figures['first_result_s']:.2f} s | {figures['inference_s']:.2f} s |"
        )
    walls = sorted(wall for wall, _ in alone)
    inside = [seconds for _, seconds in alone]
    body = (
        "`python -m bench.coldstart` — fast mode on the CPU, generated checkpoint.\n\n"
        f"Generating the checkpoint into an empty cache: {checkpoint_s:.1f} s. numba kernels "
        f"compiled by the starts below: {'some' if compiled else 'none'}.\n\n"
        "The whole stack (gpu worker with a solo pool, cpu worker, API) started from nothing, "
        "all on the same cores; ready is the API's `/readyz` (polled every 0.5 s):\n\n"
        + "\n".join(rows)
        + f"\n\nA gpu worker started alone, warm caches, {ALONE_STARTS} starts: ready "
        f"(its heartbeat, polled every {POLL_S * 1000:.0f} ms) after a median "
        f"**{statistics.median(walls):.2f} s** from spawn (min {walls[0]:.2f}, max "
        f"{walls[-1]:.2f}); {statistics.median(inside):.2f} s of it in the worker after "
        "the interpreter's start and the worker app's imports."
    )
    publish("Cold start (bench/coldstart.py)", body, not args.no_write)


if __name__ == "__main__":
    main()
