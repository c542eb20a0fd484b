"""GET /metrics, Server-Timing and the per-job log line, with real workers."""

from __future__ import annotations

import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.errors import ObjectNotFound, TransientStorageError
from shared.storage import RetryingStorage, SignedUrl, Storage
from shared.telemetry import STORAGE_ERRORS, Metric, Metrics, count_storage_error, render
from tests.faults import wait_for
from tests.helpers import log_records, sample_variant, submit, wait_finished

#: How long after its job shows as finished a worker's 'job finished' line may take.
FINISHED_LINE_TIMEOUT_S = 10


def scrape(client) -> dict[str, float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=0.0.4")
    series = {}
    for line in response.get_data(as_text=True).splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            series[name] = float(value)
    return series


def total(series: dict[str, float], prefix: str) -> float:
    return sum(value for name, value in series.items() if name.startswith(prefix))


@pytest.mark.e2e
def test_the_named_series_exist_and_move_when_a_job_runs(e2e_client):
    before = scrape(e2e_client)
    job_id = submit(e2e_client, sample_variant()).get_json()["id"]
    wait_finished(e2e_client, job_id)
    after = scrape(e2e_client)
    moved = {
        "cutfx_jobs_accepted_total": 1,
        'cutfx_jobs_finished_total{status="succeeded"}': 1,
        "cutfx_model_inferences_total": 1,
        'cutfx_http_requests_total{method="POST",route="/v1/jobs",status="202"}': 1,
        'cutfx_stage_duration_seconds_count{kind="cutout",stage="inference"}': 1,
        'cutfx_stage_duration_seconds_count{kind="effect",stage="effect"}': 4,
        'cutfx_stage_duration_seconds_count{kind="effect",stage="encode"}': 4,
        'cutfx_stage_duration_seconds_count{kind="effect",stage="queue_wait"}': 4,
        'cutfx_tasks_total{task="cutfx.apply_effect"}': 4,
        'cutfx_cache_lookups_total{kind="cutout",outcome="miss",where="submit"}': 1,
        'cutfx_cache_lookups_total{kind="cutout",outcome="miss",where="worker"}': 1,
    }
    for series, delta in moved.items():
        assert after.get(series, 0) - before.get(series, 0) == delta, series
    assert after["cutfx_job_duration_seconds_count"] > before.get(
        "cutfx_job_duration_seconds_count", 0
    )
    assert total(after, "cutfx_http_request_duration_seconds_bucket") > 0
    assert after['cutfx_ready_workers{queue="gpu"}'] == 1
    assert after['cutfx_ready_workers{queue="cpu"}'] == 1
    assert after['cutfx_queue_depth{queue="gpu"}'] == 0
    assert after["cutfx_worker_cold_starts_total"] >= 1
    assert after["cutfx_model_load_duration_seconds_count"] >= 1
    first = "cutfx_job_first_result_seconds_count"
    assert after[first] - before.get(first, 0) == 1
    assert after['cutfx_queue_oldest_age_seconds{queue="gpu"}'] == 0
    assert after['cutfx_redis_memory_used_bytes{role="store"}'] > 0
    assert 'cutfx_redis_maxmemory_bytes{role="store"}' in after


@pytest.mark.e2e
def test_each_finished_job_logs_one_line_with_its_timings(e2e_client, workers):
    job_id = submit(e2e_client, sample_variant(), effects="color").get_json()["id"]
    wait_finished(e2e_client, job_id)

    def job_lines() -> list[dict[str, Any]]:
        logs = workers.log_dir.glob("worker-*.log")
        return [line for log in logs for line in log_records(log, containing=job_id)]

    def finished_in(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [line for line in lines if line["msg"] == "job finished"]

    # The worker closes the job's record, which the API shows, and then logs the line.
    wait_for(lambda: finished_in(job_lines()), FINISHED_LINE_TIMEOUT_S, "no 'job finished' line")
    lines = job_lines()
    finished = finished_in(lines)
    assert len(finished) == 1
    assert finished[0]["job_id"] == job_id
    assert finished[0]["status"] == "succeeded"
    assert finished[0]["results"]["cutout"]["inference_s"] > 0
    ours = [line for line in lines if line["logger"].startswith(("worker", "cutfx", "shared"))]
    assert len(ours) >= 3
    assert all(line.get("job_id") == job_id for line in ours), "our lines carry the job id"


def test_responses_carry_server_timing(client):
    from tests.helpers import image_bytes

    response = submit(client, image_bytes())
    stages = [part.split(";")[0] for part in response.headers["Server-Timing"].split(", ")]
    assert stages == ["input", "record", "cache", "enqueue", "total"]
    assert "total;dur=" in client.get("/healthz").headers["Server-Timing"]


def test_histograms_render_cumulative_buckets(text_redis):
    histogram = Metric("demo_seconds", "demo", "histogram", buckets=(0.1, 1.0))
    metrics = Metrics(text_redis)
    for seconds in (0.05, 0.5, 5.0):
        metrics.observe(histogram, seconds, {"stage": "x"})
    text = render(text_redis, [histogram])
    # Label order within braces is the renderer's (prometheus_client sorts them): read
    # the samples back with its parser instead of matching text.
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples[("demo_seconds_bucket", (("le", "0.1"), ("stage", "x")))] == 1
    assert samples[("demo_seconds_bucket", (("le", "1.0"), ("stage", "x")))] == 2
    assert samples[("demo_seconds_bucket", (("le", "+Inf"), ("stage", "x")))] == 3
    assert samples[("demo_seconds_count", (("stage", "x"),))] == 3
    assert samples[("demo_seconds_sum", (("stage", "x"),))] == 5.55


def test_the_oldest_waiting_task_ages_while_no_worker_takes_it(client, text_redis):
    """No worker serves the unit tests' queues: a submitted job's segment task waits."""
    from tests.helpers import image_bytes

    submit(client, image_bytes())
    time.sleep(1.1)
    series = scrape(client)
    assert series['cutfx_queue_depth{queue="gpu"}'] >= 1
    assert series['cutfx_queue_oldest_age_seconds{queue="gpu"}'] >= 1.0
    assert series['cutfx_queue_oldest_age_seconds{queue="webhooks"}'] == 0


def test_storage_errors_are_counted_by_operation_retried_or_not(text_redis):
    metrics = Metrics(text_redis)

    class Flaky(Storage):
        calls = 0

        def put(self, key: str, data: bytes, content_type: str) -> None:
            self.calls += 1
            if self.calls == 1:
                raise TransientStorageError("disk full, for now")

        def get(self, key: str) -> bytes:
            raise ObjectNotFound(key)

        def exists(self, key: str) -> bool:
            raise PermissionError("no")

        def delete(self, key: str) -> None:
            raise NotImplementedError

        def signed_url(self, key: str, ttl_s: int) -> SignedUrl:
            raise NotImplementedError

    storage = RetryingStorage(Flaky(), budget_s=5, on_error=count_storage_error(metrics))
    storage.put("a", b"x", "image/png")
    with pytest.raises(ObjectNotFound):
        storage.get("a")
    with pytest.raises(PermissionError):
        storage.exists("a")
    assert metrics.counter_value(STORAGE_ERRORS, {"operation": "put"}) == 1
    assert metrics.counter_value(STORAGE_ERRORS, {"operation": "exists"}) == 1
    assert metrics.counter_value(STORAGE_ERRORS, {"operation": "get"}) == 0, "a miss is no error"
