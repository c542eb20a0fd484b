"""GET /v1/usage, the per-key figures on /metrics and the monthly allowance: what each key
used, counted as what it cost (a cache hit or a re-style runs no model)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from api import create_app
from api.middleware import key_id_of
from shared.jobs.model import (
    JobRecord,
    JobStatus,
    ResultRecord,
    ResultStatus,
    new_job_id,
)
from shared.telemetry import job_usage, utc_today
from tests.api.keys import KEY_A, KEY_B, bearer, keyed_submit
from tests.api.test_keep import EFFECTS, finished_job, services_of
from tests.helpers import sample_variant, submit, wait_finished

KEY_A_ID = key_id_of(KEY_A)
SHOP = "https://shop.example"


def made(name: str, cached: bool, inference_s: float | None = None, size: int = 100):
    timings = {} if inference_s is None else {"inference_s": inference_s}
    return ResultRecord(
        name=name,
        status=ResultStatus.SUCCEEDED,
        cached=cached,
        byte_size=size,
        timings=timings,
    )


def finished_with(*results: ResultRecord) -> JobRecord:
    """A finished job of these results (job_usage reads nothing else of it)."""
    return JobRecord(
        new_job_id(),
        JobStatus.SUCCEEDED,
        0.0,
        request=None,  # type: ignore[arg-type]
        results={result.name: result for result in results},
    )


def test_a_job_costs_its_inference_and_new_bytes_and_a_cache_hit_costs_neither():
    fresh = finished_with(
        made("cutout", cached=False, inference_s=1.5, size=1000),
        made("color", cached=False, size=300),
        ResultRecord(name="popart", status=ResultStatus.FAILED),
    )
    assert job_usage(fresh) == {
        "jobs": 1,
        "photos": 1,
        "inference_s": 1.5,
        "bytes_stored": 1300,
        "results:cutout": 1,
        "results:color": 1,
    }
    repeat = finished_with(
        made("cutout", cached=True, inference_s=1.5, size=1000),
        made("color", cached=True, size=300),
    )
    assert job_usage(repeat) == {
        "jobs": 1,
        "photos": 0,
        "inference_s": 0,
        "bytes_stored": 0,
        "results:cutout": 1,
        "results:color": 1,
    }


@pytest.fixture
def production_app(production):
    configured = production.with_overrides(
        key_allowances={KEY_A_ID: 2}, key_origins={KEY_A_ID: (SHOP,)}
    )
    return create_app({"TESTING": True, "CUTFX_SETTINGS": configured})


@pytest.fixture
def api(production_app):
    return production_app.test_client()


def test_usage_answers_each_day_of_the_span_for_the_caller_s_key_only(production_app, api):
    usage = services_of(production_app).usage
    today = utc_today()
    usage.add(KEY_A_ID, {"photos": 1, "inference_s": 2.25, "jobs": 1, "results:color": 1})
    usage.add(KEY_A_ID, {"jobs": 1, "results:color": 1}, day=today - timedelta(days=1))
    usage.add(key_id_of(KEY_B), {"photos": 7, "jobs": 7})
    first = today - timedelta(days=2)
    answer = api.get(f"/v1/usage?from={first}&to={today}", headers=bearer(KEY_A))
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["key_id"] == KEY_A_ID
    assert [day["date"] for day in body["days"]] == [
        (first + timedelta(days=n)).isoformat() for n in range(3)
    ]
    assert body["days"][0]["jobs"] == 0, "a quiet day is there, with zeros"
    assert body["total"]["jobs"] == 2
    assert body["total"]["photos"] == 1
    assert body["total"]["inference_s"] == 2.25
    assert body["total"]["results"] == {"color": 2}
    assert body["allowance"] == {"photos_per_month": 2, "used": 1, "left": 1}
    other = api.get("/v1/usage", headers=bearer(KEY_B)).get_json()
    assert other["total"]["photos"] == 7
    assert "allowance" not in other


@pytest.mark.parametrize(
    ("query", "field"),
    [("from=2026-13-01", "from"), ("to=yesterday", "to"), ("from=2026-05-02&to=2026-05-01", "to")],
)
def test_a_bad_span_is_a_clear_422(api, query, field):
    answer = api.get(f"/v1/usage?{query}", headers=bearer(KEY_A))
    assert answer.status_code == 422
    assert answer.get_json()["error"]["field"] == field


def test_a_span_of_more_than_a_year_is_refused(api):
    first = date(2025, 1, 1)
    answer = api.get(
        f"/v1/usage?from={first}&to={first + timedelta(days=400)}", headers=bearer(KEY_A)
    )
    assert answer.status_code == 422


def test_a_key_past_its_allowance_is_refused_until_the_month_turns(production_app, api):
    usage = services_of(production_app).usage
    usage.add(KEY_A_ID, {"photos": 2})
    refused = keyed_submit(api, KEY_A)
    assert refused.status_code == 429
    assert refused.get_json()["error"]["code"] == "allowance_exhausted"
    assert 0 < int(refused.headers["Retry-After"]) <= 31 * 86400
    assert keyed_submit(api, KEY_B).status_code == 202, "another key is not held back"
    # Last month's photos are not this month's.
    services_of(production_app).redis.flushdb()
    usage.add(KEY_A_ID, {"photos": 5}, day=utc_today().replace(day=1) - timedelta(days=1))
    assert keyed_submit(api, KEY_A).status_code == 202


def test_a_finished_job_and_a_kept_one_are_counted_and_shown_per_key_on_metrics(
    production_app, api
):
    job_id = finished_job(production_app)
    kept = api.post(f"/v1/jobs/{job_id}/keep", json={"results": ["color"]}, headers=bearer(KEY_A))
    assert kept.status_code == 200
    total = api.get("/v1/usage", headers=bearer(KEY_A)).get_json()["total"]
    assert total["jobs"] == 1
    assert total["results"] == {"cutout": 1, **dict.fromkeys(EFFECTS, 1)}
    assert total["bytes_stored"] > 0
    assert total["bytes_kept"] == kept.get_json()["results"]["color"]["kept"]["bytes"]
    text = api.get("/metrics", headers=bearer("scrape-token")).get_data(as_text=True)
    samples = {
        (sample.name, sample.labels.get("key_id")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("cutfx_usage_")
    }
    assert samples[("cutfx_usage_jobs_total", KEY_A_ID)] == 1
    assert samples[("cutfx_usage_bytes_kept_total", KEY_A_ID)] == total["bytes_kept"]
    assert samples[("cutfx_usage_jobs_total", key_id_of(KEY_B))] == 0
    assert {key for _, key in samples} == {KEY_A_ID, key_id_of(KEY_B)}, "configured keys only"


def test_a_client_token_may_not_read_its_key_s_usage(api):
    token = api.post("/v1/client-tokens", json={"origin": SHOP}, headers=bearer(KEY_A))
    assert token.status_code == 201
    answer = api.get("/v1/usage", headers={**bearer(token.get_json()["token"]), "Origin": SHOP})
    assert answer.status_code == 403


@pytest.mark.e2e
def test_real_workers_count_a_photo_once_and_a_repeat_as_no_inference(e2e_client):
    def figures():
        return e2e_client.get("/v1/usage").get_json()["total"]

    photo = sample_variant()
    before = figures()
    wait_finished(e2e_client, submit(e2e_client, photo, effects="color").get_json()["id"])
    after_first = figures()
    assert after_first["photos"] - before["photos"] == 1
    assert after_first["inference_s"] > before["inference_s"]
    assert after_first["bytes_stored"] > before["bytes_stored"]
    wait_finished(e2e_client, submit(e2e_client, photo, effects="color").get_json()["id"])
    after_repeat = figures()
    assert after_repeat["photos"] == after_first["photos"], "a cache hit runs no model"
    assert after_repeat["inference_s"] == after_first["inference_s"]
    assert after_repeat["jobs"] - after_first["jobs"] == 1
    assert after_repeat["results"]["color"] - after_first["results"]["color"] == 1
