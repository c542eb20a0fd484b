"""What the service tells its operators: structured JSON logs, counters and histograms
kept in Redis, and one trace per job.

Logs: one JSON object a line; every line written inside `job_context` carries the job id.

Metrics: kept in Redis, so every API and worker process adds to one set. Prometheus
scrapes GET /metrics on any API process; all of them read the same Redis hashes, so the
figures do not depend on which process answers. The text is rendered by
prometheus_client, through a collector that reads those hashes.

Traces: OpenTelemetry spans from the API's submit through the queue wait, the cutout's
stages and each effect to the webhook's delivery. The W3C trace context travels in each
task's message headers, so every task of a job joins the trace its submit started; the
API answers each request's `traceparent`. Off (no-op spans, nothing sent) unless
CUTFX_TRACING_ENDPOINT names an OTLP/HTTP receiver. The process's tracer is its own, not
OpenTelemetry's global one, so nothing else in the process traces through it by surprise.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import redis
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.core import Metric as Family
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from shared.jobs.model import CUTOUT, JobRecord, ResultStatus
from shared.settings import Settings

# --- logs -----------------------------------------------------------------------------

_current_job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "cutfx_job_id", default=None
)
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    token = _current_job_id.set(job_id)
    try:
        yield
    finally:
        _current_job_id.reset(token)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        job_id = getattr(record, "job_id", None) or _current_job_id.get()
        if job_id:
            entry["job_id"] = job_id
        for name, value in vars(record).items():
            if name not in _STANDARD_ATTRS and name not in entry:
                entry[name] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(service: str, level: str = "INFO") -> None:
    # The real stderr: Celery swaps sys.stderr for a proxy that logs, which would loop.
    handler = logging.StreamHandler(sys.__stderr__)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


# --- metrics --------------------------------------------------------------------------

logger = logging.getLogger("cutfx.jobs")

COUNTERS_KEY = "cutfx:metrics:counters"
HISTOGRAMS_KEY = "cutfx:metrics:histograms"
#: Seconds: fine enough for a 30 ms effect, wide enough for a 15 s CPU inference.
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Separates a histogram series from its bucket or sum in a hash field.
_PART = "|"
_INFINITY = "+Inf"
_SUM = "sum"


@dataclass(frozen=True)
class Metric:
    name: str
    help: str
    kind: Literal["counter", "histogram"]
    buckets: Sequence[float] = field(default=DEFAULT_BUCKETS)


def _series(metric: Metric, labels: Mapping[str, str] | None) -> str:
    """A hash field naming one series: the metric's name and its labels, sorted."""
    return json.dumps([metric.name, sorted((labels or {}).items())], separators=(",", ":"))


def _parse_series(raw: str) -> tuple[str, dict[str, str]]:
    name, labels = json.loads(raw)
    return str(name), {str(k): str(v) for k, v in labels}


class Metrics:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def increment(
        self, metric: Metric, labels: Mapping[str, str] | None = None, by: int = 1
    ) -> None:
        self.redis.hincrby(COUNTERS_KEY, _series(metric, labels), by)

    def observe(
        self, metric: Metric, value: float, labels: Mapping[str, str] | None = None
    ) -> None:
        series = _series(metric, labels)
        with self.redis.pipeline(transaction=False) as pipe:
            for bound in metric.buckets:
                if value <= bound:
                    pipe.hincrby(HISTOGRAMS_KEY, f"{series}{_PART}{bound}", 1)
            pipe.hincrby(HISTOGRAMS_KEY, f"{series}{_PART}{_INFINITY}", 1)
            pipe.hincrbyfloat(HISTOGRAMS_KEY, f"{series}{_PART}{_SUM}", value)
            pipe.execute()

    def histogram_totals(
        self, metric: Metric, labels: Mapping[str, str] | None = None
    ) -> tuple[int, float]:
        """How many values the histogram holds, and their sum."""
        series = _series(metric, labels)
        count, total = self.redis.hmget(
            HISTOGRAMS_KEY, [f"{series}{_PART}{_INFINITY}", f"{series}{_PART}{_SUM}"]
        )
        return int(count or 0), float(total or 0.0)

    def counter_value(self, metric: Metric, labels: Mapping[str, str] | None = None) -> int:
        raw = self.redis.hget(COUNTERS_KEY, _series(metric, labels))
        return int(raw) if raw else 0


class RedisMetricsCollector(Collector):
    """Turns the shared Redis hashes into metric families, plus gauges computed at scrape time."""

    def __init__(
        self, client: redis.Redis, metrics: Iterable[Metric], gauges: Iterable[Family] = ()
    ) -> None:
        self.client = client
        self.metrics = tuple(metrics)
        self.gauges = tuple(gauges)

    def collect(self) -> Iterator[Family]:
        stored_counters: Any = self.client.hgetall(COUNTERS_KEY)
        stored_histograms: Any = self.client.hgetall(HISTOGRAMS_KEY)
        counters = _by_series(stored_counters)
        histograms = _by_series(stored_histograms, split=True)
        for metric in self.metrics:
            if metric.kind == "counter":
                yield _counter_family(metric, counters)
            else:
                yield _histogram_family(metric, histograms)
        yield from self.gauges


def _by_series(fields: Mapping[str, str], split: bool = False) -> dict[str, dict[str, str]]:
    """Hash fields grouped by series; histogram fields split into their bucket or sum."""
    grouped: dict[str, dict[str, str]] = {}
    for raw_field, value in fields.items():
        series, _, part = raw_field.rpartition(_PART) if split else (raw_field, "", "")
        grouped.setdefault(series, {})[part] = value
    return grouped


def _labelled(
    metric: Metric, grouped: Mapping[str, dict[str, str]]
) -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    for series, parts in sorted(grouped.items()):
        name, labels = _parse_series(series)
        if name == metric.name:
            yield labels, parts


def _counter_family(metric: Metric, counters: Mapping[str, dict[str, str]]) -> Family:
    family = CounterMetricFamily(metric.name, metric.help)
    for labels, parts in _labelled(metric, counters):
        family.samples.append(Sample(f"{family.name}_total", labels, float(parts[""])))
    return family


def _histogram_family(metric: Metric, histograms: Mapping[str, dict[str, str]]) -> Family:
    family = HistogramMetricFamily(metric.name, metric.help)
    for labels, parts in _labelled(metric, histograms):
        for bound in (*(str(b) for b in metric.buckets), _INFINITY):
            bucket_labels = {**labels, "le": bound}
            family.samples.append(
                Sample(f"{metric.name}_bucket", bucket_labels, float(parts.get(bound, 0)))
            )
        count = float(parts.get(_INFINITY, 0))
        family.samples.append(Sample(f"{metric.name}_count", labels, count))
        family.samples.append(Sample(f"{metric.name}_sum", labels, float(parts.get(_SUM, 0))))
    return family


def render(client: redis.Redis, metrics: Iterable[Metric], gauges: Iterable[Family] = ()) -> str:
    """Prometheus text exposition of every series of the given metrics, plus gauges."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisMetricsCollector(client, metrics, gauges))
    return generate_latest(registry).decode()


# The series cutfx keeps.
REQUESTS = Metric(
    "cutfx_http_requests_total", "API requests by route, method and status", "counter"
)
REQUEST_SECONDS = Metric(
    "cutfx_http_request_duration_seconds", "API request handling time by route", "histogram"
)
JOBS_ACCEPTED = Metric("cutfx_jobs_accepted_total", "Jobs accepted by the API", "counter")
JOBS_FINISHED = Metric("cutfx_jobs_finished_total", "Jobs finished, by final status", "counter")
JOB_SECONDS = Metric("cutfx_job_duration_seconds", "Submit to last result", "histogram")
STAGE_SECONDS = Metric(
    "cutfx_stage_duration_seconds",
    "Time per stage (queue_wait, download, inference, effect, encode, upload) by result kind",
    "histogram",
)
QUEUE_WAIT_SECONDS = Metric(
    "cutfx_queue_wait_seconds",
    "How long a task waited in its queue, by lane (interactive, batch) and result kind",
    "histogram",
)
TASKS = Metric("cutfx_tasks_total", "Tasks started by workers, by task", "counter")
MODEL_INFERENCES = Metric(
    "cutfx_model_inferences_total", "Background-removal inferences run", "counter"
)
COLD_STARTS = Metric(
    "cutfx_worker_cold_starts_total", "Worker processes that loaded the model", "counter"
)
MODEL_LOAD_SECONDS = Metric(
    "cutfx_model_load_duration_seconds", "Model load plus warm-up per cold start", "histogram"
)
#: Photos per forward in a batching gpu worker.
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
BATCH_SIZE = Metric(
    "cutfx_model_batch_size",
    "Photos per model forward (batching gpu workers)",
    "histogram",
    buckets=BATCH_SIZES,
)
FIRST_RESULT_SECONDS = Metric(
    "cutfx_job_first_result_seconds",
    "Submit to the job's first result, observed when the job finishes (jobs with a result)",
    "histogram",
)
RESULTS_FAILED = Metric(
    "cutfx_results_failed_total",
    "Results failed for good, by error code (counted when their job finishes)",
    "counter",
)
WEBHOOK_DELIVERIES = Metric(
    "cutfx_webhook_deliveries_total",
    "Webhook POSTs by outcome (delivered, failed: each attempt that will be retried or given up)",
    "counter",
)
STORAGE_ERRORS = Metric(
    "cutfx_storage_errors_total",
    "Storage calls that raised, by operation (each attempt, retried or not)",
    "counter",
)
CACHE_LOOKUPS = Metric(
    "cutfx_cache_lookups_total",
    "Result cache lookups by result kind, outcome and where (submit: the API; worker)",
    "counter",
)

ALL_METRICS = (
    REQUESTS,
    REQUEST_SECONDS,
    JOBS_ACCEPTED,
    JOBS_FINISHED,
    JOB_SECONDS,
    STAGE_SECONDS,
    QUEUE_WAIT_SECONDS,
    TASKS,
    MODEL_INFERENCES,
    COLD_STARTS,
    MODEL_LOAD_SECONDS,
    BATCH_SIZE,
    CACHE_LOOKUPS,
    FIRST_RESULT_SECONDS,
    RESULTS_FAILED,
    WEBHOOK_DELIVERIES,
    STORAGE_ERRORS,
)


def gauge(name: str, help_text: str, values: Mapping[str, float], label: str) -> Family:
    """A gauge computed at scrape time (queue depth, ready workers)."""
    family = GaugeMetricFamily(name, help_text, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def count_storage_error(metrics: Metrics) -> Callable[[str, BaseException], None]:
    """The storage's `on_error`: one count per failed call, by operation."""

    def counted(operation: str, exc: BaseException) -> None:
        try:
            metrics.increment(STORAGE_ERRORS, {"operation": operation})
        except redis.RedisError:
            logger.warning("could not count a storage error", extra={"reason": repr(exc)})

    return counted


# --- usage per API key ---------------------------------------------------------------------
#
# What each key used, per UTC day: a hash per key and day, and one all-time hash per key
# that /metrics reads. Counted from the finished job's record, so a cache hit or a re-style
# counts as what it cost: results, and no photo, no inference, no bytes.

USAGE_PREFIX = "cutfx:usage:"
#: How long a day's figures are kept: a year and a month, for a yearly reconciliation.
USAGE_RETENTION_S = 400 * 86400
#: The owner of jobs sent without a key (development).
NO_KEY = "none"
USAGE_COUNTS = ("jobs", "photos", "inference_s", "bytes_stored", "bytes_kept")
#: A day's field for the results made of one kind: "results:color".
RESULTS_PREFIX = "results:"
ALL_TIME = "total"


def _usage_key(key_id: str, period: str) -> str:
    # The key id in braces: on a Redis Cluster all of one key's hashes share a slot.
    return f"{USAGE_PREFIX}{{{key_id or NO_KEY}}}:{period}"


class Usage:
    """What each API key used, per day."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def add(self, key_id: str, amounts: Mapping[str, float], day: date | None = None) -> None:
        """Add `amounts` (USAGE_COUNTS, or RESULTS_PREFIX + a result's name) to the day's
        figures (today, UTC) and the all-time ones."""
        spent = {name: value for name, value in amounts.items() if value}
        if not spent:
            return
        daily = _usage_key(key_id, (day or utc_today()).isoformat())
        with self.redis.pipeline(transaction=False) as pipe:
            for field_name, value in spent.items():
                pipe.hincrbyfloat(daily, field_name, value)
                pipe.hincrbyfloat(_usage_key(key_id, ALL_TIME), field_name, value)
            pipe.expire(daily, USAGE_RETENTION_S)
            pipe.execute()

    def days(self, key_id: str, first: date, last: date) -> list[dict[str, Any]]:
        """Each day from `first` to `last` with its figures (zeros on a quiet day)."""
        dates = [first + timedelta(days=n) for n in range((last - first).days + 1)]
        with self.redis.pipeline(transaction=False) as pipe:
            for day in dates:
                pipe.hgetall(_usage_key(key_id, day.isoformat()))
            stored = pipe.execute()
        return [
            {"date": day.isoformat(), **usage_view(raw)}
            for day, raw in zip(dates, stored, strict=True)
        ]

    def all_time(self, key_id: str) -> dict[str, Any]:
        raw: Any = self.redis.hgetall(_usage_key(key_id, ALL_TIME))
        return usage_view(raw)

    def photos_this_month(self, key_id: str, today: date | None = None) -> float:
        today = today or utc_today()
        month = self.days(key_id, today.replace(day=1), today)
        return float(sum(day["photos"] for day in month))


def usage_view(raw: Mapping[str, str]) -> dict[str, Any]:
    """Stored figures as clients see them: whole numbers where they count things."""
    shown: dict[str, Any] = {
        name: round(float(raw.get(name, 0)), 3)
        if name == "inference_s"
        else int(float(raw.get(name, 0)))
        for name in USAGE_COUNTS
    }
    shown["results"] = {
        name.removeprefix(RESULTS_PREFIX): int(float(value))
        for name, value in sorted(raw.items())
        if name.startswith(RESULTS_PREFIX)
    }
    return shown


def job_usage(job: JobRecord) -> dict[str, float]:
    """What a finished job used: the inference it ran and the bytes it stored (results
    taken from the cache cost neither), and its results by kind."""
    made = [r for r in job.results.values() if r.status == ResultStatus.SUCCEEDED]
    computed = [r for r in made if not r.cached]
    amounts: dict[str, float] = {
        "jobs": 1,
        "photos": sum(1 for r in computed if "inference_s" in r.timings and r.name == CUTOUT),
        "inference_s": sum(r.timings.get("inference_s", 0.0) for r in computed),
        "bytes_stored": sum(r.byte_size or 0 for r in computed),
    }
    for result in made:
        amounts[RESULTS_PREFIX + result.name] = amounts.get(RESULTS_PREFIX + result.name, 0) + 1
    return amounts


def utc_today() -> date:
    return datetime.now(UTC).date()


def usage_families(usage: Usage, key_ids: Iterable[str]) -> list[Family]:
    """Each key's all-time figures as counters (the keys are the configured ones: a bounded
    set of label values)."""
    families = {
        name: CounterMetricFamily(
            f"cutfx_usage_{name}", f"What each API key used: {name}", labels=["key_id"]
        )
        for name in USAGE_COUNTS
    }
    for key_id in sorted(key_ids):
        figures = usage.all_time(key_id)
        for name, family in families.items():
            family.add_metric([key_id or NO_KEY], float(figures[name]))
    return list(families.values())


# What happens once per job when its last result lands: one log line, the job metrics and
# its owner's usage.


class FinishedJobReporter:
    """The job store's `on_job_finished`: counts and logs each job it closes."""

    def __init__(self, metrics: Metrics, usage: Usage | None = None) -> None:
        self.metrics = metrics
        self.usage = usage

    def __call__(self, job: JobRecord) -> None:
        if self.usage is not None:
            self.usage.add(job.owner, job_usage(job))
        total_s = job.total_s or 0.0
        self.metrics.increment(JOBS_FINISHED, {"status": job.status})
        self.metrics.observe(JOB_SECONDS, total_s)
        first_s = job.first_result_s
        if first_s is not None:
            self.metrics.observe(FIRST_RESULT_SECONDS, first_s)
        for result in job.results.values():
            if result.status == ResultStatus.FAILED and result.error is not None:
                self.metrics.increment(RESULTS_FAILED, {"code": result.error["code"]})
        with job_context(job.id):
            logger.info(
                "job finished",
                extra={
                    "status": job.status,
                    "total_s": total_s,
                    "results": {
                        name: {"status": r.status, "cached": r.cached, **r.timings}
                        for name, r in job.results.items()
                    },
                },
            )


# --- traces ---------------------------------------------------------------------------

TRACEPARENT_HEADER = "traceparent"
INSTRUMENTATION_NAME = "cutfx"
_propagator = TraceContextTextMapPropagator()
_tracer: trace.Tracer = trace.NoOpTracer()
_provider: TracerProvider | None = None


def configure_tracing(
    service: str, settings: Settings, processor: SpanProcessor | None = None
) -> bool:
    """Trace this process when the settings name an endpoint (or a test hands its own
    span processor), and stop tracing it otherwise; True when spans are recorded."""
    global _tracer, _provider
    if processor is None and not settings.tracing_endpoint:
        _provider, _tracer = None, trace.NoOpTracer()
        return False
    if processor is None:
        # Imported here: the exporter pulls in protobuf, which an untraced process skips.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.tracing_endpoint))
    sampler = ParentBased(TraceIdRatioBased(settings.tracing_sample_ratio))
    provider = TracerProvider(
        resource=Resource({SERVICE_NAME: f"cutfx-{service}"}), sampler=sampler
    )
    provider.add_span_processor(processor)
    _provider, _tracer = provider, provider.get_tracer(INSTRUMENTATION_NAME)
    return True


def stop_tracing() -> None:
    """Send what is buffered and trace nothing more (as a process exits)."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _provider, _tracer = None, trace.NoOpTracer()


@contextmanager
def trace_span(name: str, **attributes: Any) -> Iterator[trace.Span]:
    """A span around the block, a child of the current one."""
    with _tracer.start_as_current_span(name, attributes=attributes) as current:
        yield current


@contextmanager
def continued_trace(carrier: Mapping[str, Any] | None) -> Iterator[None]:
    """Make the trace context in `carrier` (task or request headers, names in any case)
    the current one."""
    found = {k.lower(): v for k, v in (carrier or {}).items() if isinstance(v, str)}
    token = otel_context.attach(_propagator.extract(found))
    try:
        yield
    finally:
        otel_context.detach(token)


def trace_headers() -> dict[str, str]:
    """The current trace context as headers (none when nothing is traced)."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier


def record_trace_span(name: str, started_at: float, ended_at: float, **attributes: Any) -> None:
    """A span for something already over (the queue wait, a stage timed by a stopwatch),
    from wall-clock seconds, a child of the current span."""
    recorded = _tracer.start_span(name, start_time=_ns(started_at), attributes=attributes)
    recorded.end(end_time=_ns(max(ended_at, started_at)))


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)
