"""Counters and histograms kept in Redis, so every API and worker process adds to one set.

Prometheus scrapes GET /metrics on any API process; all of them read the same
Redis hashes, so the figures do not depend on which process answers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import redis

COUNTERS_KEY = "cutfx:metrics:counters"
HISTOGRAMS_KEY = "cutfx:metrics:histograms"
#: Seconds: fine enough for a 30 ms effect, wide enough for a 15 s CPU inference.
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _label_text(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{name}="{_escape(value)}"' for name, value in sorted(labels.items()))
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass(frozen=True)
class Metric:
    name: str
    help: str
    kind: str  # "counter" or "histogram"
    buckets: Sequence[float] = field(default=DEFAULT_BUCKETS)


class Metrics:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def increment(
        self, metric: Metric, labels: Mapping[str, str] | None = None, by: int = 1
    ) -> None:
        self.redis.hincrby(COUNTERS_KEY, metric.name + _label_text(labels or {}), by)

    def observe(
        self, metric: Metric, seconds: float, labels: Mapping[str, str] | None = None
    ) -> None:
        series = metric.name + _label_text(labels or {})
        with self.redis.pipeline(transaction=False) as pipe:
            for bound in metric.buckets:
                if seconds <= bound:
                    pipe.hincrby(HISTOGRAMS_KEY, f"{series}|le={bound}", 1)
            pipe.hincrby(HISTOGRAMS_KEY, f"{series}|le=+Inf", 1)
            pipe.hincrbyfloat(HISTOGRAMS_KEY, f"{series}|sum", seconds)
            pipe.execute()

    def counter_value(self, metric: Metric, labels: Mapping[str, str] | None = None) -> int:
        raw = self.redis.hget(COUNTERS_KEY, metric.name + _label_text(labels or {}))
        return int(raw) if raw else 0


def render(client: redis.Redis, metrics: Iterable[Metric], gauges: Iterable[str] = ()) -> str:
    """Prometheus text exposition of every series of the given metrics, plus ready-made gauges."""
    counters = {_text(k): _text(v) for k, v in client.hgetall(COUNTERS_KEY).items()}
    histograms = {_text(k): _text(v) for k, v in client.hgetall(HISTOGRAMS_KEY).items()}
    lines: list[str] = []
    for metric in metrics:
        lines.append(f"# HELP {metric.name} {metric.help}")
        lines.append(f"# TYPE {metric.name} {metric.kind}")
        if metric.kind == "counter":
            lines += [
                f"{series} {value}"
                for series, value in sorted(counters.items())
                if _named(series, metric)
            ]
        else:
            lines += _histogram_lines(metric, histograms)
    lines += list(gauges)
    return "\n".join(lines) + "\n"


def _histogram_lines(metric: Metric, stored: dict[str, str]) -> list[str]:
    lines = []
    series_names = sorted(
        {key.split("|", 1)[0] for key in stored if _named(key.split("|", 1)[0], metric)}
    )
    for series in series_names:
        name, _, labels = series.partition("{")
        labels = labels.rstrip("}")
        prefix = labels + "," if labels else ""
        for bound in [*metric.buckets, "+Inf"]:
            count = stored.get(f"{series}|le={bound}", "0")
            lines.append(f'{name}_bucket{{{prefix}le="{bound}"}} {count}')
        label_block = "{" + labels + "}" if labels else ""
        lines.append(f"{name}_sum{label_block} {stored.get(series + '|sum', '0')}")
        lines.append(f"{name}_count{label_block} {stored.get(series + '|le=+Inf', '0')}")
    return lines


def _named(series: str, metric: Metric) -> bool:
    return series == metric.name or series.startswith(metric.name + "{")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


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
    TASKS,
    MODEL_INFERENCES,
    COLD_STARTS,
    MODEL_LOAD_SECONDS,
    CACHE_LOOKUPS,
)


def gauge_lines(name: str, help_text: str, values: Mapping[str, float], label: str) -> list[str]:
    """A gauge computed at scrape time (queue depth, ready workers)."""
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    lines += [
        f'{name}{{{label}="{_escape(key)}"}} {value}' for key, value in sorted(values.items())
    ]
    return lines
