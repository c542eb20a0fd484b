"""`cutfx demo` end to end: gunicorn, three workers, the sample photo, files on disk."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import redis

from cli.stack import free_port
from tests.conftest import REPO, preferred_port, redis_url_for

pytestmark = pytest.mark.e2e

DEMO_REDIS_URL = redis_url_for("CUTFX_TEST_STACK_REDIS_URL")


def test_the_demo_saves_every_result_and_says_when_each_arrived(checkpoint, tmp_path):
    redis.Redis.from_url(DEMO_REDIS_URL).flushdb()
    environment = {
        **os.environ,
        "CUTFX_REDIS_URL": DEMO_REDIS_URL,
        "CUTFX_MODEL_MODE": "fast",
        "CUTFX_MODEL_CKPT": str(checkpoint),
        "CUTFX_LOCAL_STORAGE_DIR": str(tmp_path / "storage"),
    }
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
        env={**environment, "PYTHONPATH": str(REPO)},
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
    redis.Redis.from_url(DEMO_REDIS_URL).flushdb()
