"""GET /v1/jobs/<id>/events over real HTTP: replay, resume, live delivery, keep-alive, close."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from cli.client import parse_sse
from shared.jobs import CUTOUT, ResultRecord, StoredObject
from tests.helpers import image_bytes, submit


@pytest.fixture
def job_id(client):
    return submit(client, image_bytes(), effects="color,popart").get_json()["id"]


@pytest.fixture
def jobs(app):
    return app.extensions["cutfx"].jobs


def finish(jobs, job_id, name, storage=None):
    stored = StoredObject(f"results/aa/{name}.png", "image/png", 3, 64, 48)
    jobs.start_result(job_id, ResultRecord(name=name))
    jobs.succeed_result(job_id, ResultRecord(name=name), stored, cached=False)


def stream(server, job_id, headers=None, params=None):
    response = requests.get(
        f"{server.url}/v1/jobs/{job_id}/events",
        headers=headers or {},
        params=params or {},
        stream=True,
        timeout=(5, 20),
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    return response


def finish_all(jobs, job_id):
    for name in (CUTOUT, "color", "popart"):
        finish(jobs, job_id, name)


def test_a_finished_job_replays_its_whole_history_and_closes(live_server, jobs, job_id):
    finish_all(jobs, job_id)
    with stream(live_server, job_id) as response:
        events = list(parse_sse(response.iter_lines(decode_unicode=True)))
    types = [e.type for e in events]
    assert types[:2] == ["job.accepted", "job.started"]
    assert types.count("result.succeeded") == 3
    assert types[-1] == "job.finished"
    assert types.count("job.finished") == 1
    assert [e.data["name"] for e in events if e.type == "result.succeeded"] == [
        CUTOUT,
        "color",
        "popart",
    ]
    result = next(e for e in events if e.type == "result.succeeded").data["result"]
    assert result["url"].startswith(live_server.url + "/v1/files/results/aa/cutout.png?")
    assert result["url_expires_at"] > time.time()
    assert len({e.id for e in events}) == len(events)


@pytest.mark.parametrize("how", ["header", "query"])
def test_reconnecting_gets_exactly_the_missed_events(live_server, jobs, job_id, how):
    finish(jobs, job_id, CUTOUT)
    with stream(live_server, job_id) as response:
        lines = response.iter_lines(decode_unicode=True)
        seen = []
        for event in parse_sse(lines):
            seen.append(event)
            if event.type == "result.succeeded":
                break
    finish(jobs, job_id, "color")
    finish(jobs, job_id, "popart")
    last = seen[-1].id
    headers = {"Last-Event-ID": last} if how == "header" else None
    params = {"since": last} if how == "query" else None
    with stream(live_server, job_id, headers=headers, params=params) as response:
        rest = list(parse_sse(response.iter_lines(decode_unicode=True)))
    assert [e.data.get("name") for e in rest if e.type == "result.succeeded"] == ["color", "popart"]
    assert rest[-1].type == "job.finished"
    assert {e.id for e in seen}.isdisjoint({e.id for e in rest})


def test_live_events_arrive_as_they_happen(live_server, jobs, job_id):
    arrivals: list[tuple[str, float]] = []

    def produce():
        for name in (CUTOUT, "color", "popart"):
            time.sleep(0.3)
            finish(jobs, job_id, name)

    producer = threading.Thread(target=produce)
    started = time.monotonic()
    with stream(live_server, job_id) as response:
        producer.start()
        for event in parse_sse(response.iter_lines(decode_unicode=True)):
            arrivals.append((event.type, time.monotonic() - started))
    producer.join()
    results = [t for kind, t in arrivals if kind == "result.succeeded"]
    assert len(results) == 3
    assert results[0] < results[2] - 0.4, "each result was sent as it happened, not all at the end"
    assert arrivals[-1][0] == "job.finished"


def test_idle_streams_get_keep_alive_comments(live_server, job_id):
    with stream(live_server, job_id, params={"keepalive_ms": 200}) as response:
        lines = response.iter_lines(decode_unicode=True)
        got = [next(lines) for _ in range(12)]
    assert ": keep-alive" in got


def test_unknown_job_and_bad_resume_point(live_server, job_id):
    assert requests.get(f"{live_server.url}/v1/jobs/nope/events", timeout=5).status_code == 404
    response = requests.get(f"{live_server.url}/v1/jobs/{job_id}/events?since=abc", timeout=5)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "since"


def test_long_poll_returns_as_soon_as_the_job_changes(client, jobs, job_id):
    seen = client.get(f"/v1/jobs/{job_id}").get_json()["last_event_id"]
    timer = threading.Timer(0.3, finish, args=(jobs, job_id, CUTOUT))
    started = time.monotonic()
    timer.start()
    changed = client.get(f"/v1/jobs/{job_id}?wait=10&since={seen}").get_json()
    elapsed = time.monotonic() - started
    timer.join()
    assert 0.2 < elapsed < 5
    assert changed["last_event_id"] != seen
    assert changed["results"]["cutout"]["status"] in ("running", "succeeded")


def test_long_poll_with_an_old_since_answers_at_once(client, jobs, job_id):
    finish(jobs, job_id, CUTOUT)
    started = time.monotonic()
    client.get(f"/v1/jobs/{job_id}?wait=10&since=0-0")
    assert time.monotonic() - started < 1


def test_long_poll_times_out_with_the_unchanged_job(client, job_id):
    started = time.monotonic()
    body = client.get(f"/v1/jobs/{job_id}?wait=0.5").get_json()
    assert 0.4 < time.monotonic() - started < 3
    assert body["status"] == "queued"


@pytest.mark.parametrize("wait", ["-1", "31", "soon"])
def test_long_poll_bounds(client, job_id, wait):
    response = client.get(f"/v1/jobs/{job_id}?wait={wait}")
    assert response.status_code == 422
    assert response.get_json()["error"]["field"] == "wait"
