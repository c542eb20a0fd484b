"""Write cutfx's monitoring as code: the Prometheus rules (SLO recording rules, burn-rate
and symptom alerts), the Grafana dashboard, and the prometheus-operator PrometheusRule.

    python deploy/monitoring/generate.py        # rewrites the files below; commit them

The rules and panels are defined once, here; tests/test_monitoring.py checks that the
committed files are what this writes, that promtool accepts them, and that each alert
fires (and stays quiet) as its unit tests in deploy/monitoring/rules.test.yml say.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
RULES_FILE = HERE / "rules.yml"
DASHBOARD_FILE = HERE / "dashboard.json"
PROMETHEUS_RULE_FILE = HERE.parent / "k8s" / "monitoring" / "prometheusrule.yaml"
#: Where each alert's runbook entry is: the README's section, by anchor.
RUNBOOK = "README.md#runbook-{anchor}"

# --- service level objectives ------------------------------------------------------------


@dataclass(frozen=True)
class Slo:
    """A target over SLO_WINDOW: `errors` and `total` are PromQL for the rate of bad and
    of all events, `$window` standing for the window each recording rule reads."""

    name: str
    target: float
    summary: str
    errors: str
    total: str
    runbook: str

    def error_ratio(self, window: str) -> str:
        errors = Template(self.errors).substitute(window=window)
        total = Template(self.total).substitute(window=window)
        # A job counted good at finish by the histogram and canceled since is no error.
        return f"clamp_min({errors}, 0)\n/\n{total}"


#: The SRE workbook's windows, a 28-day budget: (long window, short window, burn rate,
#: severity). 14.4 spends 2 % of the budget in an hour; 6, 5 % in six hours; 3 and 1,
#: 10 % in a day and in three days.
BURN_WINDOWS = (
    ("1h", "5m", 14.4, "page"),
    ("6h", "30m", 6.0, "page"),
    ("1d", "2h", 3.0, "ticket"),
    ("3d", "6h", 1.0, "ticket"),
)
SLO_WINDOW = "28d"
#: Seconds within which a job's first result should be there (a GPU worker: ~1 s of
#: inference, the queue and the upload; a bucket bound of cutfx_job_first_result_seconds).
FIRST_RESULT_WITHIN_S = 10.0
#: Routes that are probes, not users' requests.
PROBE_ROUTES = "/healthz|/readyz|/metrics"
_FINISHED_JOBS = 'sum(rate(cutfx_jobs_finished_total{status!="canceled"}[$window]))'
_REQUESTS = 'sum(rate(cutfx_http_requests_total{route!~"%s"%s}[$window]))'

SLOS = (
    Slo(
        name="first_result",
        target=0.99,
        summary=f"99 % of jobs give a first result within {FIRST_RESULT_WITHIN_S:g} s",
        # Good: jobs whose first result came in time; a job that never gave one (it
        # failed) is in the total only.
        errors=(
            f"({_FINISHED_JOBS} - sum(rate(cutfx_job_first_result_seconds_bucket"
            f'{{le="{FIRST_RESULT_WITHIN_S}"}}[$window])))'
        ),
        total=_FINISHED_JOBS,
        runbook="slo-first-result",
    ),
    Slo(
        name="api_availability",
        target=0.999,
        summary="99.9 % of API requests are answered without a 5xx",
        errors=_REQUESTS % (PROBE_ROUTES, ',status=~"5.."'),
        total=_REQUESTS % (PROBE_ROUTES, ""),
        runbook="slo-api-availability",
    ),
)


def _windows() -> list[str]:
    return sorted({w for long, short, _, _ in BURN_WINDOWS for w in (long, short)}, key=_seconds)


def _seconds(window: str) -> int:
    units = {"m": 60, "h": 3600, "d": 86400}
    return int(window[:-1]) * units[window[-1]]


def slo_recording_rules(slo: Slo) -> list[dict[str, Any]]:
    """The error ratio over each window the burn-rate alerts read."""
    return [
        {
            "record": f"cutfx:slo_errors:ratio_rate{window}",
            "expr": slo.error_ratio(window),
            "labels": {"slo": slo.name},
        }
        for window in _windows()
    ]


def burn_rate_alerts(slo: Slo) -> list[dict[str, Any]]:
    budget = round(1 - slo.target, 6)
    alerts = []
    for long, short, burn, severity in BURN_WINDOWS:
        threshold = f"({burn} * {budget})"
        pick = f'{{slo="{slo.name}"}}'
        alerts.append(
            {
                "alert": "CutfxErrorBudgetBurn",
                "expr": (
                    f"cutfx:slo_errors:ratio_rate{long}{pick} > {threshold}\n"
                    f"and\ncutfx:slo_errors:ratio_rate{short}{pick} > {threshold}"
                ),
                "for": "2m" if severity == "page" else "15m",
                "labels": {"severity": severity, "slo": slo.name, "window": long},
                "annotations": {
                    "summary": f"{slo.summary}: the error budget burns {burn:g}x too fast",
                    "description": (
                        f"{{{{ $value | humanizePercentage }}}} missed over {long}; "
                        f"the {SLO_WINDOW} budget lasts {_days_left(burn)} at this rate."
                    ),
                    "runbook_url": RUNBOOK.format(anchor=slo.runbook),
                },
            }
        )
    return alerts


def _days_left(burn: float) -> str:
    days = 28 / burn
    return f"{days:.1f} days" if days >= 1 else f"{days * 24:.0f} hours"


# --- symptoms ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Symptom:
    name: str
    expr: str
    wait: str
    severity: str
    summary: str
    description: str
    runbook: str


#: The oldest task a queue may hold before someone looks (a GPU worker takes seconds).
OLDEST_TASK_MAX_S = 120
#: Model loads an hour past which the workers are thrashing: each costs seconds to a
#: minute of a user's wait (the seed's cold starts were 30–60 s).
COLD_STARTS_PER_HOUR_MAX = 6
#: The share of the cache hit ratio a day ago below which it counts as dropped.
CACHE_HIT_RATIO_DROP = 0.5
#: Cache lookups a second below which the ratio is noise.
CACHE_MIN_LOOKUPS_PER_S = 0.01
FAILED_JOB_RATIO_MAX = 0.05
WEBHOOK_FAILED_RATIO_MAX = 0.25
STORAGE_ERRORS_PER_S_MAX = 0.05
REDIS_MEMORY_RATIO_MAX = 0.9
#: The 95th percentile of an interactive photo's wait for a model: a person watches it.
INTERACTIVE_WAIT_P95_MAX_S = 10

SYMPTOMS = (
    Symptom(
        name="CutfxNoReadyGpuWorker",
        expr=(
            'max(cutfx_queue_depth{queue="gpu"}) > 0\n'
            'and on()\nmax(cutfx_ready_workers{queue="gpu"}) == 0'
        ),
        wait="2m",
        severity="page",
        summary="Photos wait and no gpu worker is ready",
        description="{{ $value }} tasks wait on the gpu queue and no ready worker serves it.",
        runbook="no-ready-gpu-worker",
    ),
    Symptom(
        name="CutfxQueueOldestTaskOld",
        expr=(
            'max by (queue) (cutfx_queue_oldest_age_seconds{queue=~"gpu|cpu"})'
            f" > {OLDEST_TASK_MAX_S}"
        ),
        wait="5m",
        severity="page",
        summary="Tasks wait minutes on the {{ $labels.queue }} queue",
        description="Its oldest task has waited {{ $value | humanizeDuration }}.",
        runbook="oldest-task",
    ),
    Symptom(
        name="CutfxColdStartsFrequent",
        expr=f"sum(increase(cutfx_worker_cold_starts_total[1h])) > {COLD_STARTS_PER_HOUR_MAX}",
        wait="15m",
        severity="ticket",
        summary="Workers load the model too often",
        description="{{ $value | humanize }} model loads in the last hour.",
        runbook="cold-starts",
    ),
    Symptom(
        name="CutfxCacheHitRatioDropped",
        expr=(
            f"cutfx:cache_hit:ratio_rate1h < {CACHE_HIT_RATIO_DROP} * "
            "(cutfx:cache_hit:ratio_rate1h offset 1d)\n"
            f"and on()\nsum(rate(cutfx_cache_lookups_total[1h])) > {CACHE_MIN_LOOKUPS_PER_S}"
        ),
        wait="30m",
        severity="ticket",
        summary="The result cache hits less than half as often as a day ago",
        description="The cache hit ratio is {{ $value | humanizePercentage }} this hour.",
        runbook="cache-hit-ratio",
    ),
    Symptom(
        name="CutfxFailedJobsHigh",
        expr=(
            'sum(rate(cutfx_jobs_finished_total{status=~"failed|partial"}[30m]))\n/\n'
            'sum(rate(cutfx_jobs_finished_total{status!="canceled"}[30m]))'
            f" > {FAILED_JOB_RATIO_MAX}"
        ),
        wait="10m",
        severity="page",
        summary="Many jobs fail",
        description="{{ $value | humanizePercentage }} of the jobs of the last 30 minutes failed.",
        runbook="failed-jobs",
    ),
    Symptom(
        name="CutfxWebhooksFailing",
        expr=(
            'sum(rate(cutfx_webhook_deliveries_total{outcome="failed"}[15m]))\n/\n'
            f"sum(rate(cutfx_webhook_deliveries_total[15m])) > {WEBHOOK_FAILED_RATIO_MAX}"
        ),
        wait="15m",
        severity="ticket",
        summary="Webhook deliveries fail",
        description="{{ $value | humanizePercentage }} of the POSTs of 15 minutes failed.",
        runbook="webhooks-failing",
    ),
    Symptom(
        name="CutfxStorageErrors",
        expr=(
            "sum by (operation) (rate(cutfx_storage_errors_total[5m]))"
            f" > {STORAGE_ERRORS_PER_S_MAX}"
        ),
        wait="5m",
        severity="page",
        summary="Storage {{ $labels.operation }} calls fail",
        description='{{ printf "%.2f" $value }} failed {{ $labels.operation }} calls a second.',
        runbook="storage-errors",
    ),
    Symptom(
        name="CutfxRedisMemoryNearMax",
        expr=(
            "max by (role) (cutfx_redis_memory_used_bytes / (cutfx_redis_maxmemory_bytes > 0))"
            f" > {REDIS_MEMORY_RATIO_MAX}"
        ),
        wait="5m",
        severity="page",
        summary="The {{ $labels.role }} Redis is nearly full",
        description="It uses {{ $value | humanizePercentage }} of its maxmemory.",
        runbook="redis-memory",
    ),
    Symptom(
        name="CutfxInteractiveWaitLong",
        expr=(
            "histogram_quantile(0.95, sum by (le) (rate(cutfx_queue_wait_seconds_bucket"
            '{lane="interactive",kind="cutout"}[10m])))'
            f" > {INTERACTIVE_WAIT_P95_MAX_S}"
        ),
        wait="10m",
        severity="ticket",
        summary="People wait long for their cutout to start",
        description="95 % of interactive photos waited up to {{ $value | humanizeDuration }}.",
        runbook="interactive-wait",
    ),
    Symptom(
        name="CutfxMetricsMissing",
        expr="absent(cutfx_queue_depth)",
        wait="5m",
        severity="page",
        summary="No cutfx metrics are scraped",
        description="Prometheus has no cutfx_queue_depth: every API is down or unreachable.",
        runbook="metrics-missing",
    ),
)

CACHE_RECORDING_RULES = [
    {
        "record": "cutfx:cache_hit:ratio_rate1h",
        "expr": (
            'sum(rate(cutfx_cache_lookups_total{outcome="hit"}[1h]))\n/\n'
            "sum(rate(cutfx_cache_lookups_total[1h]))"
        ),
    }
]


def symptom_alert(symptom: Symptom) -> dict[str, Any]:
    return {
        "alert": symptom.name,
        "expr": symptom.expr,
        "for": symptom.wait,
        "labels": {"severity": symptom.severity},
        "annotations": {
            "summary": symptom.summary,
            "description": symptom.description,
            "runbook_url": RUNBOOK.format(anchor=symptom.runbook),
        },
    }


def rule_groups() -> list[dict[str, Any]]:
    recording = [rule for slo in SLOS for rule in slo_recording_rules(slo)]
    return [
        {"name": "cutfx-recording", "rules": recording + CACHE_RECORDING_RULES},
        {"name": "cutfx-slo-alerts", "rules": [a for slo in SLOS for a in burn_rate_alerts(slo)]},
        {"name": "cutfx-symptom-alerts", "rules": [symptom_alert(s) for s in SYMPTOMS]},
    ]


# --- the dashboard -----------------------------------------------------------------------


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    #: (legend, PromQL) per line.
    queries: tuple[tuple[str, str], ...]


def _quantiles(histogram: str, by: str = "") -> tuple[tuple[str, str], ...]:
    labels = f"le{', ' + by if by else ''}"
    legend = f"{{{{{by}}}}} " if by else ""
    return tuple(
        (
            f"{legend}p{int(q * 100)}",
            f"histogram_quantile({q}, sum by ({labels}) (rate({histogram}_bucket[5m])))",
        )
        for q in (0.5, 0.95)
    )


PANELS = (
    Panel("Time to first result", "s", _quantiles("cutfx_job_first_result_seconds")),
    Panel("Time to all results", "s", _quantiles("cutfx_job_duration_seconds")),
    Panel(
        "Jobs per second",
        "reqps",
        (
            ("accepted", "sum(rate(cutfx_jobs_accepted_total[5m]))"),
            ("{{status}}", "sum by (status) (rate(cutfx_jobs_finished_total[5m]))"),
        ),
    ),
    Panel("Queue depth", "short", (("{{queue}}", "max by (queue) (cutfx_queue_depth)"),)),
    Panel(
        "Oldest waiting task",
        "s",
        (("{{queue}}", "max by (queue) (cutfx_queue_oldest_age_seconds)"),),
    ),
    Panel(
        "Queue wait by lane (p95)",
        "s",
        (
            (
                "{{lane}} {{kind}}",
                "histogram_quantile(0.95, sum by (le, lane, kind) "
                "(rate(cutfx_queue_wait_seconds_bucket[5m])))",
            ),
        ),
    ),
    Panel("Ready workers", "short", (("{{queue}}", "max by (queue) (cutfx_ready_workers)"),)),
    Panel(
        "Cold starts (model loads an hour)",
        "short",
        (("loads", "sum(increase(cutfx_worker_cold_starts_total[1h]))"),),
    ),
    Panel(
        "Cache hit ratio",
        "percentunit",
        (
            (
                "{{where}}",
                'sum by (where) (rate(cutfx_cache_lookups_total{outcome="hit"}[5m]))\n/\n'
                "sum by (where) (rate(cutfx_cache_lookups_total[5m]))",
            ),
        ),
    ),
    Panel(
        "Stage durations (p95)",
        "s",
        (
            (
                "{{kind}} {{stage}}",
                "histogram_quantile(0.95, sum by (le, kind, stage) "
                "(rate(cutfx_stage_duration_seconds_bucket[5m])))",
            ),
        ),
    ),
    Panel(
        "Photos per model forward",
        "short",
        (
            (
                "mean",
                "sum(rate(cutfx_model_batch_size_sum[5m]))\n/\n"
                "sum(rate(cutfx_model_batch_size_count[5m]))",
            ),
            *_quantiles("cutfx_model_batch_size")[1:],
        ),
    ),
    Panel(
        "Errors by code",
        "reqps",
        (
            ("result {{code}}", "sum by (code) (rate(cutfx_results_failed_total[5m]))"),
            (
                "HTTP {{status}}",
                'sum by (status) (rate(cutfx_http_requests_total{status=~"[45].."}[5m]))',
            ),
            ("storage {{operation}}", "sum by (operation) (rate(cutfx_storage_errors_total[5m]))"),
            (
                "webhook failed",
                'sum(rate(cutfx_webhook_deliveries_total{outcome="failed"}[5m]))',
            ),
        ),
    ),
    Panel(
        "SLO error ratio, 1 h (budget: 1 - target)",
        "percentunit",
        (("{{slo}}", "max by (slo) (cutfx:slo_errors:ratio_rate1h)"),),
    ),
)

PANEL_WIDTH = 12
PANEL_HEIGHT = 8


def dashboard() -> dict[str, Any]:
    panels = []
    for index, panel in enumerate(PANELS):
        panels.append(
            {
                "id": index + 1,
                "type": "timeseries",
                "title": panel.title,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {
                    "h": PANEL_HEIGHT,
                    "w": PANEL_WIDTH,
                    "x": (index % 2) * PANEL_WIDTH,
                    "y": (index // 2) * PANEL_HEIGHT,
                },
                "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
                "targets": [
                    {
                        "refId": chr(ord("A") + n),
                        "expr": expr,
                        "legendFormat": legend,
                        "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    }
                    for n, (legend, expr) in enumerate(panel.queries)
                ],
            }
        )
    return {
        "uid": "cutfx-overview",
        "title": "cutfx",
        "tags": ["cutfx"],
        "timezone": "browser",
        "schemaVersion": 39,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Prometheus",
                }
            ]
        },
        "panels": panels,
    }


# --- the files ---------------------------------------------------------------------------

GENERATED = "# Generated by deploy/monitoring/generate.py: edit that, then run it.\n"


class _BlockDumper(yaml.SafeDumper):  # type: ignore[misc]
    """Multi-line strings (the longer PromQL) as YAML literal blocks, as people write them."""


def _represent_text(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_BlockDumper.add_representer(str, _represent_text)


def _yaml(data: Any) -> str:
    return GENERATED + yaml.dump(data, Dumper=_BlockDumper, sort_keys=False, width=100)


def rules_text() -> str:
    return _yaml({"groups": rule_groups()})


def prometheus_rule_text() -> str:
    manifest = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "cutfx",
            "namespace": "cutfx",
            "labels": {"app.kubernetes.io/name": "cutfx"},
        },
        "spec": {"groups": rule_groups()},
    }
    return _yaml(manifest)


def dashboard_text() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def outputs() -> dict[Path, str]:
    return {
        RULES_FILE: rules_text(),
        DASHBOARD_FILE: dashboard_text(),
        PROMETHEUS_RULE_FILE: prometheus_rule_text(),
    }


def main() -> int:
    for path, text in outputs().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        sys.stdout.write(f"wrote {path.relative_to(HERE.parents[1])}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
