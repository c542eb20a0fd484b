"""`cutfx demo` end to end: gunicorn, three workers, the sample photo, files on disk."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from cli.stack import free_port
from tests.conftest import REPO, preferred_port, redis_url_for

pytestmark = pytest.mark.e2e

DEMO_REDIS_URL = redis_url_for("CUTFX_TEST_STACK_REDIS_URL")


def demo_environment(checkpoint: Path, tmp_path: Path) -> dict[str, str]:
    """A demo's environment on the test's database, checkpoint and storage."""
    return {
        **os.environ,
        "CUTFX_REDIS_URL": DEMO_REDIS_URL,
        "CUTFX_MODEL_MODE": "fast",
        "CUTFX_MODEL_CKPT": str(checkpoint),
        "CUTFX_LOCAL_STORAGE_DIR": str(tmp_path / "storage"),
        "PYTHONPATH": str(REPO),
    }


def test_the_demo_saves_every_result_and_says_when_each_arrived(checkpoint, tmp_path):
    redis.Redis.from_url(DEMO_REDIS_URL).flushdb()
    out = tmp_path / "demo-output"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "demo",
            "--output",
            str(out),
            "--port",
            str(free_port(preferred_port(8600))),
        ],
        cwd=tmp_path,
        env=demo_environment(checkpoint, tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    (job_folder,) = out.iterdir()
    names = sorted(path.name for path in job_folder.iterdir())
    assert names == sorted(
        ["cutout.webp", "color.webp", "enhancedblackwhite.webp", "popart.webp", "dithering.webp"]
    )
    assert "job succeeded" in completed.stdout
    assert completed.stdout.count(" KB  → ") == 5
    assert "breakdown: model" in completed.stdout
    assert "stopped the workers and the API in" in completed.stdout
    redis.Redis.from_url(DEMO_REDIS_URL).flushdb()


def processes_whose_environment_has(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if text.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
    return found


def test_a_demo_told_to_stop_stops_the_workers_and_api_it_started(checkpoint, tmp_path):
    redis.Redis.from_url(DEMO_REDIS_URL).flushdb()
    port = free_port(preferred_port(8610))
    command = [sys.executable, "-m", "cli", "demo", "--keep-running", "--port", str(port)]
    demo = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=demo_environment(checkpoint, tmp_path),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            if "the web page is at" in line:
                break
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        demo.kill()
        # Were the demo to leave them, they would take later tests' jobs from its database.
        for pid in processes_whose_environment_has(str(tmp_path)):
            os.kill(pid, signal.SIGKILL)
    logs = tmp_path / "var" / "logs"
    for worker in ("worker-gpu", "worker-cpu", "worker-webhooks"):
        assert "Warm shutdown" in (logs / f"{worker}.log").read_text(), worker
    assert "Shutting down: Master" in (logs / "api.log").read_text()
    with pytest.raises(ConnectionError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    redis.Redis.from_url(DEMO_REDIS_URL).flushdb()
