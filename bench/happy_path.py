"""Which project files one job's happy path runs through, from the upload to the client's
last read: `python -m bench.happy_path`.

A new photo (effects=color) is submitted through the real API (Flask's test client), its
segment and its effect run in this process as a worker runs them, and the job is read
back. Every function call is traced (`sys.setprofile`, in every thread); a file counts
once any of its functions runs. A warm-up job runs first, untraced, so that start-up
(imports, the model's load, the first compile) is not counted: what is left is the path
a newcomer reads to follow one job.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import redis

from bench.common import random_checkpoint, sample_variant
from bench.runs import BENCH_RATE_LIMIT, bench_redis_url
from cli import service_settings

REPO = Path(__file__).resolve().parents[1]
#: The service's own packages; tests, benchmarks and the command line are not the service.
SERVICE_PACKAGES = ("api", "worker", "effects", "shared")


class FileTrace:
    """The service files whose functions were called while tracing."""

    def __init__(self) -> None:
        self.files: set[str] = set()
        self._roots = tuple(str(REPO / package) + "/" for package in SERVICE_PACKAGES)

    def _profile(self, frame: FrameType, event: str, _arg: Any) -> None:
        if event == "call" and frame.f_code.co_filename.startswith(self._roots):
            self.files.add(str(Path(frame.f_code.co_filename).relative_to(REPO)))

    @contextmanager
    def tracing(self) -> Iterator[None]:
        threading.setprofile(self._profile)
        sys.setprofile(self._profile)
        try:
            yield
        finally:
            sys.setprofile(None)
            threading.setprofile(None)  # type: ignore[arg-type]


@dataclass
class Sides:
    """The files each side of one job ran through."""

    api: FileTrace = field(default_factory=FileTrace)
    worker: FileTrace = field(default_factory=FileTrace)

    @property
    def files(self) -> set[str]:
        return self.api.files | self.worker.files


def run_one_job(client: Any, seed: int, sides: Sides | None = None) -> None:
    """Submit, segment, apply `color`, read the job: one job as a worker runs it (its
    tasks called in this process); traced by side when `sides` is given."""
    from worker.tasks import apply_effect, segment

    api = sides.api.tracing() if sides else nullcontext()
    worker = sides.worker.tracing() if sides else nullcontext()
    with api:
        answer = client.post(
            "/v1/jobs",
            data={"image": (io.BytesIO(sample_variant(seed)), "photo.png"), "effects": "color"},
            content_type="multipart/form-data",
        )
    if answer.status_code != 202:
        raise RuntimeError(f"submit answered {answer.status_code}: {answer.get_data(True)}")
    job_id = answer.get_json()["id"]
    with worker:
        segment(job_id)
        apply_effect(job_id, "color")
    api = sides.api.tracing() if sides else nullcontext()
    with api:
        job = client.get(f"/v1/jobs/{job_id}").get_json()
    if job["status"] != "succeeded":
        raise RuntimeError(f"the job ended {job['status']}: {job}")


def happy_path(storage_dir: Path, checkpoint: str) -> Sides:
    """The service files one traced job runs through (after one untraced warm-up job)."""
    from api import create_app
    from worker.celery_app import create_celery
    from worker.process import this_process

    settings = service_settings().with_overrides(
        env="development",
        redis_url=bench_redis_url(),
        local_storage_dir=storage_dir,
        model_mode="fast",
        model_ckpt=checkpoint,
        submit_rate_limit=BENCH_RATE_LIMIT,
        read_rate_limit=BENCH_RATE_LIMIT,
    )
    redis.Redis.from_url(settings.redis_url).flushdb()
    client = create_app({"TESTING": True, "CUTFX_SETTINGS": settings}).test_client()
    create_celery(settings).set_current()
    process = this_process()
    process.settings, process.queues = settings, ("cpu", "gpu")
    run_one_job(client, seed=1)
    sides = Sides()
    run_one_job(client, seed=2, sides=sides)
    redis.Redis.from_url(settings.redis_url).flushdb()
    return sides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    checkpoint = random_checkpoint("fast")
    with tempfile.TemporaryDirectory() as storage:
        sides = happy_path(Path(storage), str(checkpoint))
    for name in sorted(sides.files):
        where = [side for side in ("api", "worker") if name in getattr(sides, side).files]
        print(f"{name:28} {' + '.join(where)}")
    print(
        f"{len(sides.files)} service files on one job's happy path "
        f"({len(sides.api.files)} in the API, {len(sides.worker.files)} in the worker)"
    )


if __name__ == "__main__":
    main()
