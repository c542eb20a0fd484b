"""A photo by address against the same photo uploaded: `python -m bench.fetch`.

The API in this process (Flask's test client, development settings, Redis database 12)
takes each photo twice: uploaded in a multipart form, and as image_url from a loopback
HTTP server. A submit decodes, stores and queues; no worker is needed. Each submit is a
photo no cache has seen. Reports the submit's median and p95 either way, and the fetch
stage of the Server-Timing header, for a small PNG and a 12 MP phone JPEG.
"""

from __future__ import annotations

import argparse
import http.server
import io
import re
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import redis
from flask.testing import FlaskClient
from PIL import Image

from bench.common import SAMPLE, median_ms, p95_ms, publish, sample_variant
from bench.runs import bench_redis_url
from cli import service_settings

PHONE_SIZE = (4032, 3024)


def phone_jpeg(seed: int) -> bytes:
    photo = Image.open(SAMPLE).convert("RGB").resize(PHONE_SIZE)
    photo.putpixel((0, 0), tuple(int(v) for v in np.random.default_rng(seed).integers(0, 256, 3)))
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


class PhotoHost(http.server.ThreadingHTTPServer):
    """Serves the bytes registered under each path, as a shop's CDN would."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.photos: dict[str, bytes] = {}
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def publish(self, name: str, data: bytes) -> str:
        self.photos["/" + name] = data
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: PhotoHost

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        data = self.server.photos[self.path]
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def stage_ms(header: str, stage: str) -> float | None:
    found = re.search(rf"{stage};dur=([\d.]+)", header)
    return float(found.group(1)) if found else None


def measure(
    client: FlaskClient, host: PhotoHost, make: Callable[[int], bytes], runs: int, seed: int
) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {"upload": [], "url": [], "fetch": []}
    for index in range(runs):
        uploaded, fetched = make(seed + 2 * index), make(seed + 2 * index + 1)
        started = time.perf_counter()
        answer = client.post(
            "/v1/jobs",
            data={"image": (io.BytesIO(uploaded), "photo"), "effects": "color"},
            content_type="multipart/form-data",
        )
        timings["upload"].append(time.perf_counter() - started)
        assert answer.status_code == 202, answer.get_json()
        url = host.publish(f"photo-{seed}-{index}", fetched)
        started = time.perf_counter()
        answer = client.post("/v1/jobs", json={"image_url": url, "effects": "color"})
        timings["url"].append(time.perf_counter() - started)
        assert answer.status_code == 202, answer.get_json()
        fetch_ms = stage_ms(answer.headers["Server-Timing"], "fetch")
        if fetch_ms is not None:
            timings["fetch"].append(fetch_ms / 1000)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--write", action="store_true", help="record in bench/RESULTS.md")
    args = parser.parse_args()
    from api import create_app

    redis_url = bench_redis_url()
    redis.Redis.from_url(redis_url).flushdb()
    settings = service_settings().with_overrides(
        env="development",
        redis_url=redis_url,
        local_storage_dir=Path(tempfile.mkdtemp(prefix="cutfx-fetch-")),
        fetch_allow_loopback=True,
        submit_rate_limit="100000/minute",
        read_rate_limit="100000/minute",
        max_active_jobs_per_key=100_000,
    )
    client = create_app({"TESTING": True, "CUTFX_SETTINGS": settings}).test_client()
    host = PhotoHost()
    rows = [
        "| photo | bytes | submit, uploaded (median / p95) | submit, by image_url "
        "| of which fetch |",
        "|---|---|---|---|---|",
    ]
    for label, make, seed in (("451×300 PNG", sample_variant, 0), ("12 MP JPEG", phone_jpeg, 1000)):
        measure(client, host, make, 1, seed + 500)  # warm-up: first decode, first connection
        timings = measure(client, host, make, args.runs, seed)
        rows.append(
            f"| {label} | {len(make(seed)):,} | {median_ms(timings['upload']):.0f} / "
            f"{p95_ms(timings['upload']):.0f} ms | {median_ms(timings['url']):.0f} / "
            f"{p95_ms(timings['url']):.0f} ms | {median_ms(timings['fetch']):.1f} ms |"
        )
    host.shutdown()
    redis.Redis.from_url(redis_url).flushdb()
    body = (
        f"{args.runs} submits each way, each a photo no cache has seen; the photo server on "
        "loopback, so the fetch is the service's own cost, not a network's.\n\n" + "\n".join(rows)
    )
    publish("Photos by address (bench/fetch.py)", body, args.write)


if __name__ == "__main__":
    main()
