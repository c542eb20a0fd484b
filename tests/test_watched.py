"""Watched for real: a job is one trace across the API and real workers, and a real
Prometheus with cutfx's rules sees the gpu pool empty with photos waiting, then full again.

The stack is the tests' own: a redis-server on another loopback port, real workers
(tracing to an OTLP/HTTP receiver here on loopback), the API in this process (its spans
in the SDK's in-memory exporter, its /metrics served over HTTP for Prometheus), and
Debian's prometheus on a loopback port.
"""

from __future__ import annotations

import contextlib
import http.server
import logging
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from werkzeug.serving import make_server

from api import create_app
from cli.stack import free_port
from shared.telemetry import stop_tracing
from tests.conftest import make_settings, preferred_port
from tests.faults import FaultStack, RedisServer, submit_jobs, wait_for
from tests.helpers import sample_variant, serving, submit, wait_all_finished, wait_finished
from tests.worker.test_webhooks import Receiver

pytestmark = pytest.mark.e2e
logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "deploy" / "monitoring" / "rules.yml"
METRICS_TOKEN = "watched-metrics-token"
NO_GPU_ALERT = "CutfxNoReadyGpuWorker"
#: The alert waits 2 minutes in production (a rolling restart passes); here a few seconds,
#: so the test shows the rule's expression at work without waiting the production delay
#: (promtool's unit tests cover the 2 minutes).
TEST_FOR = "5s"
SCRAPE_INTERVAL = "1s"
#: Every stage of a job the trace must show, in the workers.
WORKER_SPANS = {
    "queue_wait",
    "segment",
    "download",
    "inference",
    "encode",
    "upload",
    "effect color",
    "effect",
    "deliver_webhooks",
    "webhook POST",
}
API_SPANS = {"POST /v1/jobs", "input", "record", "cache", "enqueue"}


# --- an OTLP/HTTP receiver, as a collector would be -----------------------------------------


class SpanReceiver(http.server.ThreadingHTTPServer):
    """Takes OTLP/HTTP protobuf exports on /v1/traces and keeps each span's essentials."""

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), SpanHandler)
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/traces"


class SpanHandler(http.server.BaseHTTPRequestHandler):
    server: SpanReceiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        export = ExportTraceServiceRequest.FromString(body)
        taken = [
            {
                "name": span.name,
                "trace_id": span.trace_id.hex(),
                "span_id": span.span_id.hex(),
                "parent_id": span.parent_span_id.hex(),
                "attributes": {a.key: a.value.string_value for a in span.attributes},
            }
            for resource in export.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]
        with self.server.lock:
            self.server.spans += taken
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


# --- the stack -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def watched_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("watched")
    return {name: root / name for name in ("redis", "storage", "logs", "prometheus")}


@pytest.fixture(scope="module")
def span_receiver():
    receiver = SpanReceiver(free_port(preferred_port(4318)))
    with serving(receiver):
        yield receiver


@pytest.fixture(scope="module")
def watched_settings(watched_dirs, checkpoint, span_receiver):
    server = RedisServer(watched_dirs["redis"], preferred_port=preferred_port(6397))
    server.start()
    yield make_settings(
        server.url,
        watched_dirs["storage"],
        model_ckpt=str(checkpoint),
        metrics_token=METRICS_TOKEN,
        tracing_endpoint=span_receiver.url,
    )
    server.stop()


@pytest.fixture(scope="module")
def watched_stack(watched_settings, watched_dirs):
    watched_dirs["logs"].mkdir(parents=True, exist_ok=True)
    # Spans leave a worker a fifth of a second after they end, not five seconds.
    stack = FaultStack(watched_settings, watched_dirs["logs"], {"OTEL_BSP_SCHEDULE_DELAY": "200"})
    stack.client.flushdb()
    stack.start_all()
    yield stack
    stack.stop_all()


@pytest.fixture(scope="module")
def api_spans():
    return InMemorySpanExporter()


@pytest.fixture(scope="module")
def watched_app(watched_settings, api_spans):
    app = create_app(
        {
            "TESTING": True,
            "CUTFX_SETTINGS": watched_settings,
            "CUTFX_SPAN_PROCESSOR": SimpleSpanProcessor(api_spans),
        }
    )
    yield app
    stop_tracing()


@pytest.fixture
def watched_client(watched_app, watched_stack):
    return watched_app.test_client()


# --- one trace per job ------------------------------------------------------------------------


def test_a_job_is_one_trace_from_submit_to_webhook(watched_client, api_spans, span_receiver):
    webhook = Receiver(fail_first=0)
    with serving(webhook):
        answer = submit(
            watched_client,
            sample_variant(),
            effects="color",
            callback_url=webhook.url,
            callback_events="job.finished",
        )
        assert answer.status_code == 202
        # W3C: version-trace id-parent id-flags, whose lowest bit says "sampled".
        version, trace_id, _, flags = answer.headers["traceparent"].split("-")
        assert version == "00"
        assert int(flags, 16) & 1
        wait_finished(watched_client, answer.get_json()["id"])
        wait_for(lambda: webhook.received, 60, "no webhook delivered")

        def worker_spans() -> list[dict[str, Any]]:
            with span_receiver.lock:
                return [span for span in span_receiver.spans if span["trace_id"] == trace_id]

        wait_for(
            lambda: {span["name"] for span in worker_spans()} >= WORKER_SPANS,
            60,
            f"the workers' spans of trace {trace_id} are not all in",
        )
    ours = [
        {
            "name": span.name,
            "span_id": f"{span.context.span_id:016x}",
            "parent_id": f"{span.parent.span_id:016x}" if span.parent else "",
        }
        for span in api_spans.get_finished_spans()
        if f"{span.context.trace_id:032x}" == trace_id
    ]
    assert {span["name"] for span in ours} >= API_SPANS
    every = ours + worker_spans()
    ids = {span["span_id"] for span in every}
    roots = [span for span in every if not span["parent_id"]]
    assert [root["name"] for root in roots] == ["POST /v1/jobs"], "one root: the submit"
    orphans = [span["name"] for span in every if span["parent_id"] and span["parent_id"] not in ids]
    assert not orphans, f"spans whose parent is not in the trace: {orphans}"
    job_id = answer.get_json()["id"]
    segment = next(span for span in every if span["name"] == "segment")
    assert segment["attributes"]["cutfx.job_id"] == job_id
    by_id = {span["span_id"]: span for span in every}
    inference = next(span for span in every if span["name"] == "inference")
    assert by_id[inference["parent_id"]]["name"] == "segment"


def test_a_caller_s_trace_is_continued(watched_client):
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    answer = watched_client.get("/healthz", headers={"traceparent": caller})
    assert answer.headers["traceparent"].split("-")[1] == "0af7651916cd43dd8448eb211c80319c"


# --- a real Prometheus with cutfx's rules ------------------------------------------------------


@pytest.fixture
def metrics_server(watched_app):
    server = make_server("127.0.0.1", free_port(preferred_port(8790)), watched_app, threaded=True)
    with serving(server):
        yield f"127.0.0.1:{server.server_port}"


def rules_for_the_test() -> dict[str, Any]:
    """cutfx's rules as committed, the no-gpu alert's `for` shortened."""
    rules = yaml.safe_load(RULES.read_text())
    (alert,) = [
        rule
        for group in rules["groups"]
        for rule in group["rules"]
        if rule.get("alert") == NO_GPU_ALERT
    ]
    assert alert["for"] == "2m"
    alert["for"] = TEST_FOR
    return rules


@pytest.fixture
def prometheus(metrics_server, watched_dirs):
    folder = watched_dirs["prometheus"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rules.yml").write_text(yaml.safe_dump(rules_for_the_test()))
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": ["rules.yml"],
        "scrape_configs": [
            {
                "job_name": "cutfx-api",
                "authorization": {"type": "Bearer", "credentials": METRICS_TOKEN},
                "static_configs": [{"targets": [metrics_server]}],
            }
        ],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port(preferred_port(9390))
    log = (folder / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert process.poll() is None, (folder / "prometheus.log").read_text()
        # A slow answer while it starts is a not-yet, as a refused connection is.
        with contextlib.suppress(requests.ConnectionError, requests.Timeout):
            return requests.get(f"{url}/-/ready", timeout=2).status_code == 200
        return False

    try:
        wait_for(ready, 60, "prometheus did not start")
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    answer = requests.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=5)
    answer.raise_for_status()
    result: list[dict[str, Any]] = answer.json()["data"]["result"]
    return result


def alert_state(prometheus: str, name: str) -> str | None:
    answer = requests.get(f"{prometheus}/api/v1/alerts", timeout=5)
    answer.raise_for_status()
    states = [
        a["state"] for a in answer.json()["data"]["alerts"] if a["labels"]["alertname"] == name
    ]
    return states[0] if states else None


def test_prometheus_pages_when_photos_wait_without_a_gpu_worker_and_resolves(
    prometheus, watched_stack, watched_client, record_property
):
    def scraped_gpu_workers() -> float | None:
        result = query(prometheus, 'cutfx_ready_workers{queue="gpu"}')
        return float(result[0]["value"][1]) if result else None

    wait_for(lambda: scraped_gpu_workers() == 1, 60, "prometheus never scraped the ready worker")
    assert alert_state(prometheus, NO_GPU_ALERT) is None

    gpu = watched_stack.processes["gpu"]
    os.killpg(gpu.pid, signal.SIGTERM)
    gpu.wait(timeout=60)
    stopped_at = time.monotonic()
    job_ids = submit_jobs(watched_client, 2, effects="color")
    wait_for(
        lambda: alert_state(prometheus, NO_GPU_ALERT) == "firing",
        90,
        f"{NO_GPU_ALERT} never fired",
    )
    firing_after_s = time.monotonic() - stopped_at
    assert alert_state(prometheus, "CutfxMetricsMissing") is None

    watched_stack.start("gpu")
    started_at = time.monotonic()
    wait_for(
        lambda: alert_state(prometheus, NO_GPU_ALERT) is None,
        120,
        f"{NO_GPU_ALERT} never resolved",
    )
    resolved_after_s = time.monotonic() - started_at
    jobs = wait_all_finished(watched_client, job_ids, timeout_s=180)
    assert [job["status"] for job in jobs] == ["succeeded", "succeeded"], "nothing was lost"
    record_property("firing_after_s", round(firing_after_s, 1))
    record_property("resolved_after_s", round(resolved_after_s, 1))
    logger.info(
        "%s: firing %.1f s after the stop, resolved %.1f s after the start",
        NO_GPU_ALERT,
        firing_after_s,
        resolved_after_s,
    )
