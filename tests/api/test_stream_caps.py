"""A key's open event streams and long-polls are capped (CUTFX_MAX_STREAMS_PER_KEY), across
API processes: past the cap, 429 too_many_streams with Retry-After, while another key's
stream opens at once. Over a real HTTP server, real sockets closed by the client."""

from __future__ import annotations

import time

import pytest
import requests
from werkzeug.serving import make_server

from api import create_app
from api.middleware import STREAMS_RETRY_AFTER_S
from tests.api.keys import KEY_A, KEY_B, bearer
from tests.api.test_keep import finished_job
from tests.helpers import serving

CAP = 2


@pytest.fixture
def capped_app(production):
    return create_app(
        {"TESTING": True, "CUTFX_SETTINGS": production.with_overrides(max_streams_per_key=CAP)}
    )


@pytest.fixture
def base_url(capped_app):
    server = make_server("127.0.0.1", 0, capped_app, threaded=True)
    with serving(server):
        yield f"http://127.0.0.1:{server.server_port}"


def open_stream(base_url: str, job_id: str, key: str) -> requests.Response:
    return requests.get(
        f"{base_url}/v1/jobs/{job_id}/events?keepalive_ms=100",
        headers=bearer(key),
        stream=True,
        timeout=10,
    )


def test_a_key_past_its_cap_gets_429_and_another_key_is_served_at_once(capped_app, base_url):
    job_a = finished_job(capped_app, KEY_A, finish=())  # unfinished: its stream waits
    job_b = finished_job(capped_app, KEY_B, finish=())
    held = [open_stream(base_url, job_a, KEY_A) for _ in range(CAP)]
    try:
        assert [stream.status_code for stream in held] == [200] * CAP
        refused = open_stream(base_url, job_a, KEY_A)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "too_many_streams"
        assert int(refused.headers["Retry-After"]) == STREAMS_RETRY_AFTER_S
        poll = requests.get(f"{base_url}/v1/jobs/{job_a}?wait=1", headers=bearer(KEY_A), timeout=10)
        assert poll.status_code == 429, "a long-poll takes a slot too"
        started = time.monotonic()
        other = open_stream(base_url, job_b, KEY_B)
        assert other.status_code == 200
        assert time.monotonic() - started < 0.5
        other.close()
    finally:
        for stream in held:
            stream.close()


def test_a_closed_stream_gives_its_slot_back(capped_app, base_url):
    job_id = finished_job(capped_app, KEY_A, finish=())
    held = [open_stream(base_url, job_id, KEY_A) for _ in range(CAP)]
    held[0].close()
    deadline = time.monotonic() + 10
    reopened = open_stream(base_url, job_id, KEY_A)
    while reopened.status_code == 429 and time.monotonic() < deadline:
        time.sleep(0.2)
        reopened = open_stream(base_url, job_id, KEY_A)
    try:
        assert reopened.status_code == 200, "the closed stream's slot came back"
    finally:
        reopened.close()
        held[1].close()


def test_a_long_poll_returns_its_slot_when_it_answers(capped_app, base_url):
    job_id = finished_job(capped_app, KEY_A, finish=())
    for _ in range(CAP + 2):
        answer = requests.get(
            f"{base_url}/v1/jobs/{job_id}?wait=0.2", headers=bearer(KEY_A), timeout=10
        )
        assert answer.status_code == 200
