"""Attacks as an attacker would send them, against the real API and a real Redis."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from api import create_app
from api.middleware import key_id_of
from shared.errors import ConfigurationError
from tests.api.keys import KEY_A, KEY_B, bearer, keyed_submit
from tests.conftest import REPO
from tests.helpers import image_bytes, submit


@pytest.fixture
def tenants(production):
    return create_app({"TESTING": True, "CUTFX_SETTINGS": production}).test_client()


# --- secure by default --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"api_keys": ()}, "CUTFX_API_KEYS is empty"),
        ({"signing_key": "cutfx-development-signing-key"}, "development default"),
        ({"signing_key": "short"}, "shorter than 32"),
        ({"webhook_allow_loopback": True}, "CUTFX_WEBHOOK_ALLOW_LOOPBACK"),
        ({"fetch_allow_loopback": True}, "CUTFX_FETCH_ALLOW_LOOPBACK"),
    ],
)
def test_a_production_api_without_keys_will_not_start(production, overrides, reason):
    with pytest.raises(ConfigurationError, match=reason):
        create_app({"TESTING": True, "CUTFX_SETTINGS": production.with_overrides(**overrides)})


def test_production_is_the_default_and_refuses_the_out_of_the_box_settings(redis_client):
    """Real processes: the API factory and the worker app, started as an operator would."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(REPO),
        "CUTFX_REDIS_URL": "redis://127.0.0.1:6379/15",
    }
    for probe in ("from api import create_app; create_app()", "import worker.celery_app"):
        done = subprocess.run(
            [sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert done.returncode != 0, probe
        assert "will not start in production" in done.stderr
        assert "CUTFX_ENV=development" in done.stderr


# --- tenants -------------------------------------------------------------------------------


def test_another_key_cannot_read_stream_or_long_poll_a_job(tenants):
    job_id = keyed_submit(tenants, KEY_A).get_json()["id"]
    assert tenants.get(f"/v1/jobs/{job_id}", headers=bearer(KEY_A)).status_code == 200
    missing = tenants.get("/v1/jobs/" + "0" * 32, headers=bearer(KEY_B))
    for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}?wait=1", f"/v1/jobs/{job_id}/events"):
        other = tenants.get(path, headers=bearer(KEY_B))
        assert other.status_code == 404, path
        assert other.get_json()["error"]["code"] == missing.get_json()["error"]["code"]


def test_idempotency_keys_and_webhook_secrets_belong_to_one_key(tenants):
    first = keyed_submit(tenants, KEY_A, headers={"Idempotency-Key": "order-1"}).get_json()
    second = keyed_submit(tenants, KEY_B, headers={"Idempotency-Key": "order-1"}).get_json()
    assert first["id"] != second["id"], "B's key did not replay A's job"
    secret_a = tenants.get("/v1/webhooks/secret", headers=bearer(KEY_A)).get_json()["secret"]
    secret_b = tenants.get("/v1/webhooks/secret", headers=bearer(KEY_B)).get_json()["secret"]
    assert secret_a != secret_b


def test_raw_keys_are_nowhere_in_redis(tenants, redis_client):
    keyed_submit(
        tenants,
        KEY_A,
        headers={"Idempotency-Key": "order-secret-77"},
        callback_url="https://8.8.8.8/hook",
    )
    dump = []
    for key in redis_client.scan_iter("*"):
        dump.append(key)
        kind = redis_client.type(key)
        if kind == b"hash":
            dump.extend(v for pair in redis_client.hgetall(key).items() for v in pair)
        elif kind == b"string":
            dump.append(redis_client.get(key))
    text = b"\n".join(dump)
    assert KEY_A.encode() not in text
    assert b"order-secret-77" not in text, "idempotency keys are stored as keyed digests"
    assert key_id_of(KEY_A).encode() in text, "the job records its owner by key id"


def test_the_key_is_never_read_from_the_url(tenants):
    response = tenants.get(f"/v1/webhooks/secret?api_key={KEY_A}")
    assert response.status_code == 401


def test_warmup_needs_a_key(tenants):
    assert tenants.post("/v1/warmup").status_code == 401
    assert tenants.post("/v1/warmup", headers=bearer(KEY_A)).status_code == 200


# --- rate limits and fair queues ----------------------------------------------------------


def test_submits_past_the_limit_get_429_with_the_headers_remove_bg_sends(production):
    client = create_app(
        {"TESTING": True, "CUTFX_SETTINGS": production.with_overrides(submit_rate_limit="2/minute")}
    ).test_client()
    answers = [keyed_submit(client, KEY_A) for _ in range(3)]
    assert [a.status_code for a in answers] == [202, 202, 429]
    refused = answers[-1]
    assert refused.get_json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) > 0
    assert refused.headers["X-RateLimit-Limit"] == "2"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert int(refused.headers["X-RateLimit-Reset"]) > time.time()
    assert refused.headers["RateLimit-Limit"] == "2"
    assert 0 < int(refused.headers["RateLimit-Reset"]) <= 61, "seconds, not a timestamp"
    assert keyed_submit(client, KEY_B).status_code == 202, "each key has its own budget"
    assert client.get("/v1/effects", headers=bearer(KEY_A)).status_code == 200, "reads apart"


def test_reads_have_their_own_limit_and_health_checks_none(production):
    client = create_app(
        {"TESTING": True, "CUTFX_SETTINGS": production.with_overrides(read_rate_limit="3/minute")}
    ).test_client()
    codes = [client.get("/v1/effects", headers=bearer(KEY_A)).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    assert all(client.get("/healthz").status_code == 200 for _ in range(5))
    assert keyed_submit(client, KEY_A).status_code == 202


def test_a_key_cannot_fill_the_queue_past_its_unfinished_job_cap(production, redis_client):
    client = create_app(
        {"TESTING": True, "CUTFX_SETTINGS": production.with_overrides(max_active_jobs_per_key=2)}
    ).test_client()
    answers = [keyed_submit(client, KEY_A, image_bytes(seed=i)) for i in range(3)]
    assert [a.status_code for a in answers] == [202, 202, 429]
    assert answers[-1].get_json()["error"]["code"] == "too_many_active_jobs"
    assert "Retry-After" in answers[-1].headers
    assert keyed_submit(client, KEY_B).status_code == 202


# --- denial of service through parameters --------------------------------------------------


@pytest.mark.parametrize("value", ["0", "abc", "-5", "99999999", "1e3"])
def test_event_stream_keepalive_is_bounded(client, value):
    job_id = submit(client, image_bytes()).get_json()["id"]
    response = client.get(f"/v1/jobs/{job_id}/events?keepalive_ms={value}")
    assert response.status_code == 400
    assert response.get_json()["error"]["field"] == "keepalive_ms"


@pytest.mark.parametrize("since", ["99999999999999999999999", "1-99999999999999999999", "-1"])
def test_a_stream_id_redis_cannot_take_is_a_4xx_not_a_503(client, since):
    job_id = submit(client, image_bytes()).get_json()["id"]
    for path in (
        f"/v1/jobs/{job_id}/events?since={since}",
        f"/v1/jobs/{job_id}?wait=1&since={since}",
    ):
        response = client.get(path)
        assert response.status_code == 422, path
        assert response.get_json()["error"]["field"] == "since"


def test_a_resumed_stream_of_a_finished_job_ends_at_once(app, client):
    from shared.jobs import CUTOUT, ResultRecord

    job_id = submit(client, image_bytes(), effects="color").get_json()["id"]
    jobs = app.extensions["cutfx"].jobs
    for name in (CUTOUT, "color"):
        jobs.fail_result(job_id, ResultRecord(name=name), "failed", "test")
    last = jobs.last_event_id(job_id)
    started = time.monotonic()
    response = client.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": last})
    body = response.get_data(as_text=True)
    assert time.monotonic() - started < 2, "no keep-alives until the record expires"
    assert "event:" not in body


def test_redis_connections_time_out(app):
    pool = app.extensions["cutfx"].redis.connection_pool
    assert pool.connection_kwargs["socket_timeout"] > 60, "longer than any blocking read"
    assert pool.connection_kwargs["socket_connect_timeout"] <= 5


# --- malformed input is never a 5xx --------------------------------------------------------


def test_non_ascii_link_signatures_and_keys_are_refused_not_crashed(tenants, client):
    response = client.get("/v1/files/results/ab/x.webp?expires=9999999999&sig=%C3%A9%C3%A9")
    assert response.status_code == 403
    assert tenants.get("/v1/jobs/x", headers={"X-API-Key": "clé-volée"}).status_code == 401


def test_deeply_nested_params_are_a_400(client):
    response = submit(client, image_bytes(), params="[" * 100_000 + "]" * 100_000)
    assert response.status_code == 400
    assert response.get_json()["error"]["field"] == "params"


def test_a_link_minted_for_longer_than_links_live_is_refused(app, client):
    from shared.signing import Purpose, derive_key
    from shared.storage import link_signature

    storage = app.extensions["cutfx"].storage
    storage.put("results/ab/object.webp", b"RIFF0000WEBP", "image/webp")
    settings = app.extensions["cutfx"].settings
    far = int(time.time()) + 365 * 24 * 3600
    signature = link_signature(
        derive_key(settings.signing_key, Purpose.FILE_LINKS), "results/ab/object.webp", far
    )
    response = client.get(f"/v1/files/results/ab/object.webp?expires={far}&sig={signature}")
    assert response.status_code == 403
    assert "longer life" in response.get_json()["error"]["message"]


# --- metrics -------------------------------------------------------------------------------


def test_metrics_need_their_own_token_in_production(tenants):
    assert tenants.get("/metrics").status_code == 401
    assert tenants.get("/metrics", headers=bearer(KEY_A)).status_code == 401
    assert tenants.get("/metrics", headers=bearer("scrape-token")).status_code == 200


def test_made_up_methods_do_not_mint_metric_series(client):
    for index in range(5):
        client.open("/healthz", method=f"XX{index}")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'method="XX' not in text
    assert 'method="other"' in text


# --- the page -------------------------------------------------------------------------------


def test_the_page_is_served_with_a_strict_policy_and_no_key_in_urls(client):
    response = client.get("/")
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Frame-Options"] == "DENY"
    html = response.get_data(as_text=True)
    assert "<script>" not in html, "no inline script"
    script = client.get("/static/app.js").get_data(as_text=True)
    assert "api_key=" not in script
    assert "EventSource(" not in script, "events are read with fetch and a header"
    assert json.loads(client.get("/v1/effects").get_data())["effects"]
