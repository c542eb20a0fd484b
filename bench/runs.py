"""Client-side measurements of jobs against a running cutfx, shared by the service benchmarks."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.common import random_checkpoint
from cli import service_settings
from cli.client import CutfxClient
from cli.stack import LocalStack, free_port

SAMPLE = Path("samples/chelsea.png")
LONG_SIDE = 1024


@dataclass
class JobRun:
    accepted_s: float = 0.0
    first_result_s: float = 0.0
    all_results_s: float = 0.0
    bytes_downloaded: int = 0
    server_timing: str = ""
    job: dict[str, Any] = field(default_factory=dict)


BENCH_REDIS_URL = "redis://127.0.0.1:6379/12"
#: A benchmark measures the service, not its limits.
BENCH_RATE_LIMIT = "1000000/minute"


def run_job(client: CutfxClient, photo: Path, **form: str) -> JobRun:
    """Submit, follow the events, download every result: what a shop's page does."""
    run = JobRun()
    started = time.monotonic()
    job = client.submit(photo, **form)
    run.accepted_s = time.monotonic() - started
    for event in client.events(job["id"]):
        if event.type == "result.succeeded":
            run.bytes_downloaded += len(client.download(event.data["result"]["url"]))
            if not run.first_result_s:
                run.first_result_s = time.monotonic() - started
        if event.type == "job.finished":
            run.all_results_s = time.monotonic() - started
    run.job = client.job(job["id"])
    return run


def stage_seconds(job: dict[str, Any]) -> dict[str, list[float]]:
    """Per stage, the seconds each result spent in it (queue wait derived from its timings)."""
    stages: dict[str, list[float]] = {}
    for result in job["results"].values():
        timings = result["timings"]
        if "started_at" in timings:
            stages.setdefault("queue_wait", []).append(timings["started_at"] - timings["queued_at"])
        for name, value in timings.items():
            if name.endswith("_s"):
                stages.setdefault(name[:-2], []).append(value)
    return stages


def bench_redis_url() -> str:
    """The Redis database local stacks of the benchmarks use (CUTFX_BENCH_REDIS_URL)."""
    return os.environ.get("CUTFX_BENCH_REDIS_URL", BENCH_REDIS_URL)


def use_local_settings(workdir: Path) -> None:
    """Settings for a local stack: development mode without rate limits, fast mode, the
    generated checkpoint, Redis database 12."""

    os.environ.update(
        CUTFX_ENV="development",
        CUTFX_SUBMIT_RATE_LIMIT=BENCH_RATE_LIMIT,
        CUTFX_READ_RATE_LIMIT=BENCH_RATE_LIMIT,
        CUTFX_MAX_ACTIVE_JOBS_PER_KEY="100000",
        CUTFX_MODEL_MODE="fast",
        CUTFX_MODEL_CKPT=str(random_checkpoint("fast")),
        CUTFX_REDIS_URL=bench_redis_url(),
        CUTFX_LOCAL_STORAGE_DIR=str(workdir / "storage"),
    )


@contextmanager
def deployment(api_url: str | None, workdir: Path) -> Iterator[CutfxClient]:
    """The deployment at api_url, or a local stack started for the run."""
    if api_url:
        yield CutfxClient(api_url, os.environ.get("CUTFX_API_KEY"))
        return
    with local_stack(workdir) as (_, client):
        yield client


@contextmanager
def local_stack(
    workdir: Path,
    preferred_port: int = 8500,
    settings: dict[str, str] | None = None,
    **stack_options: Any,
) -> Iterator[tuple[LocalStack, CutfxClient]]:
    """A local stack on the benchmark settings (`settings` changing some), started and
    ready; stopped after. `stack_options` go to LocalStack (replicas, worker_env,
    cpu_concurrency)."""
    use_local_settings(workdir)
    os.environ.update(settings or {})
    stack_options.setdefault("batch_max", service_settings().batch_max)
    stack = LocalStack(workdir / "logs", free_port(preferred_port), **stack_options)
    stack.start()
    try:
        client = CutfxClient(stack.base_url)
        stack.wait_ready(client)
        yield stack, client
    finally:
        stack.stop()


def scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="cutfx-bench-"))


def photo_variants(count: int, folder: Path, long_side: int = LONG_SIDE) -> list[Path]:
    """The sample at `long_side` px, one pixel changed per copy so each is new to the cache."""
    base = Image.open(SAMPLE).convert("RGB")
    height = round(base.height * long_side / base.width)
    base = base.resize((long_side, height), Image.Resampling.LANCZOS)
    paths = []
    for index in range(count):
        pixels = np.asarray(base).copy()
        pixels[0, 0] = (index % 256, index // 256 % 256, 7)
        path = folder / f"photo-{index}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def measure_jobs(api_url: str | None, jobs: int) -> list[JobRun]:
    """Run `jobs` distinct photos one after another against a deployment."""
    workdir = scratch()
    with deployment(api_url, workdir) as client:
        return [run_job(client, photo) for photo in photo_variants(jobs, workdir)]


def report_jobs(description: str | None, table: Callable[[list[JobRun]], str]) -> None:
    """The command line of a benchmark that measures jobs and prints one table."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--api-url", help="a running deployment (default: a local stack)")
    parser.add_argument("--jobs", type=int, default=5)
    args = parser.parse_args()
    print(table(measure_jobs(args.api_url, args.jobs)))
