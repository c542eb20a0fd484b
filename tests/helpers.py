"""Small helpers the API and end-to-end tests share."""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "chelsea.png"
FINISHED = ("succeeded", "failed", "partial", "canceled")
#: prctl(2)'s option that sends the child a signal when its parent thread ends.
PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)


def stops_with_the_test_process() -> None:
    """A Popen preexec_fn: the child is sent SIGTERM when the test process ends, a crash
    included. A crashed pytest-xdist process once left its workers running, and they took
    the next run's jobs from its Redis database and wrote them where that run never looked.
    Only for children started on the main thread (the signal follows the thread)."""
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def image_bytes(
    width: int = 64,
    height: int = 48,
    fmt: str = "PNG",
    mode: str = "RGB",
    seed: int = 0,
    **save: Any,
) -> bytes:
    rng = np.random.default_rng(seed)
    channels = len(mode)
    pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    image = Image.fromarray(pixels.squeeze(), mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


def submit(client, data: bytes, filename: str = "photo.png", **form: str):
    payload: dict[str, Any] = {"image": (io.BytesIO(data), filename), **form}
    return client.post("/v1/jobs", data=payload, content_type="multipart/form-data")


def wait_finished(client, job_id: str, timeout_s: float = 180) -> dict[str, Any]:
    (job,) = wait_all_finished(client, [job_id], timeout_s)
    return job


def wait_all_finished(client, job_ids: list[str], timeout_s: float = 180) -> list[dict[str, Any]]:
    """Each job's record, in `job_ids`' order, once all have finished. They may finish in
    any order (fair share puts a key's later photos in lower lists; a cached one jumps
    the queue), so the wait gives up only when none has finished for `timeout_s`, with
    the record of a job still unfinished, so it says where it stuck."""
    finished: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    while True:
        waiting = [job_id for job_id in job_ids if job_id not in finished]
        if not waiting:
            return [finished[job_id] for job_id in job_ids]
        for job_id in waiting:
            job = client.get(f"/v1/jobs/{job_id}").get_json()
            if job["status"] in FINISHED:
                finished[job_id] = job
                deadline = time.monotonic() + timeout_s
            elif time.monotonic() > deadline:
                raise TimeoutError(
                    f"none of {len(waiting)} jobs finished in {timeout_s} s; job {job_id}: {job}"
                )
        time.sleep(0.2)


def log_records(log: Path, containing: str = "") -> list[dict[str, Any]]:
    """The JSON records a process has written whole to its log, those whose line holds
    `containing`: its other lines are left out, and so is a last line it may still be
    writing."""
    lines = log.read_text().split("\n")[:-1]
    return [json.loads(line) for line in lines if line.startswith("{") and containing in line]


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def sample_variant() -> bytes:
    """The sample photo with one random pixel changed: new to every cache."""
    pixels = np.asarray(Image.open(SAMPLE).convert("RGB")).copy()
    rng = np.random.default_rng()
    pixels[0, 0] = rng.integers(0, 256, 3)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def assert_the_cli_serves(args: list[str]) -> None:
    """`cutfx <args>` is the command that runs the API server."""
    from cli.main import build_parser, serve

    assert build_parser().parse_args(args).handler is serve


@contextlib.contextmanager
def serving(server: Any) -> Iterator[None]:
    """`server` (an http.server or werkzeug server) answering on a thread of its own."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
