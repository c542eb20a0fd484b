"""deploy/monitoring: the rules, their promtool unit tests, the dashboard and the
prometheus-operator manifests are what the generator writes, parse, fire when they
should, and name only series cutfx exports."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from shared.settings import ENV_PREFIX, Settings

REPO = Path(__file__).resolve().parents[1]
MONITORING = REPO / "deploy" / "monitoring"
K8S_MONITORING = REPO / "deploy" / "k8s" / "monitoring"
API_DEPLOYMENT = REPO / "deploy" / "k8s" / "api.yaml"
SETTING_NAMES = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
#: What the dashboard must show (the issue's list of panels), by words in a panel's title.
REQUIRED_PANELS = (
    "first result",
    "all results",
    "jobs per second",
    "queue depth",
    "oldest waiting",
    "ready workers",
    "cold starts",
    "cache hit ratio",
    "stage durations",
    "per model forward",
    "errors by code",
)
#: promtool's unit tests of rules.yml; the daily one evaluates every 5 minutes, not 1.
UNIT_TEST_FILES = ("rules.test.yml", "rules.daily.test.yml")
PROMQL_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "and",
    "or",
    "unless",
    "bool",
    "inf",
    "nan",
}


GENERATOR_MODULE = "cutfx_monitoring_generate"


def load_generator() -> ModuleType:
    """deploy/monitoring/generate.py, which is a script and no package's module."""
    spec = importlib.util.spec_from_file_location(GENERATOR_MODULE, MONITORING / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered first: its dataclasses look their module up while they are made.
    sys.modules[GENERATOR_MODULE] = module
    spec.loader.exec_module(module)
    return module


generator = load_generator()


def promtool(*args: str, cwd: Path = MONITORING) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.fail("promtool is missing: scripts/ensure-prometheus.sh installs it")
    return subprocess.run(
        ["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_committed_files_are_what_the_generator_writes():
    for path, text in generator.outputs().items():
        assert path.read_text() == text, f"{path.name} is stale: python {generator.__file__}"


def test_promtool_accepts_the_rules():
    checked = promtool("check", "rules", "rules.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_each_alert_fires_when_it_should_and_stays_quiet_otherwise():
    """promtool's unit tests: synthetic series for every alert, a firing case and a quiet
    one each."""
    tested = promtool("test", "rules", *UNIT_TEST_FILES)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    cases = [
        case
        for name in UNIT_TEST_FILES
        for test in yaml.safe_load((MONITORING / name).read_text())["tests"]
        for case in test["alert_rule_test"]
    ]
    firing = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
    alerts = {rule["alert"] for rule in alert_rules()}
    assert firing == alerts, "each alert is shown firing"
    assert quiet == alerts, "each alert is shown quiet"


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((MONITORING / "rules.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_every_alert_has_a_summary_a_description_and_a_runbook_entry():
    readme = (REPO / "README.md").read_text()
    anchors = set(re.findall(r'<a id="(runbook-[a-z0-9-]+)"></a>', readme))
    for rule in alert_rules():
        annotations = rule["annotations"]
        assert annotations["summary"], rule["alert"]
        assert annotations["description"], rule["alert"]
        assert rule["labels"]["severity"] in {"page", "ticket"}
        runbook = annotations["runbook_url"]
        assert runbook.startswith("README.md#"), runbook
        assert runbook.removeprefix("README.md#") in anchors, f"no README entry for {runbook}"


# --- the dashboard ---------------------------------------------------------------------------


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]


def test_the_dashboard_has_every_panel_asked_for():
    titles = [title.lower() for title, _ in panel_queries()]
    for wanted in REQUIRED_PANELS:
        assert any(wanted in title for title in titles), f"no panel shows {wanted}"


def test_every_panel_query_parses(tmp_path):
    """promtool parses PromQL when it checks rules: each query, as a recording rule."""
    rules = {
        "groups": [
            {
                "name": "panels",
                "rules": [
                    {"record": f"cutfx:panel_{n}", "expr": expr}
                    for n, (_, expr) in enumerate(panel_queries())
                ],
            }
        ]
    }
    (tmp_path / "panels.yml").write_text(yaml.safe_dump(rules))
    checked = promtool("check", "rules", "panels.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def metric_names(expr: str) -> set[str]:
    """The series a PromQL expression selects: what is left of it without strings, label
    matchers, ranges, grouping clauses, functions, keywords and numbers."""
    stripped = re.sub(r'"[^"]*"', "", expr)
    stripped = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\b\d+(ms|[smhdwy])\b", " ", stripped)
    stripped = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", stripped
    )
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", stripped):
        following = stripped[match.end() :].lstrip()
        token = match.group(0)
        if following.startswith("(") or token.lower() in PROMQL_KEYWORDS:
            continue
        names.add(token)
    return names


def exported_series(client) -> set[str]:
    """Every sample name GET /metrics can show, from its TYPE lines."""
    text = client.get("/metrics").get_data(as_text=True)
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "gauge": ("",),
    }
    names = set()
    # A counter's family is named without _total once it has samples, with it before.
    for kind, family in (
        (m.group(2), m.group(1)) for m in re.finditer(r"# TYPE (\S+) (\S+)", text)
    ):
        base = family.removesuffix("_total") if kind == "counter" else family
        names |= {base + suffix for suffix in suffixes[kind]}
    return names


def recorded_series() -> set[str]:
    groups = yaml.safe_load((MONITORING / "rules.yml").read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def test_the_selector_reader_finds_the_names_and_only_them():
    expr = 'sum by (le) (rate(cutfx_a_bucket{le="1", x=~"a|b"}[5m])) / on() cutfx:b offset 1d'
    assert metric_names(expr) == {"cutfx_a_bucket", "cutfx:b"}


def test_panels_and_rules_name_only_series_cutfx_exports_or_records(client):
    known = exported_series(client) | recorded_series()
    assert "cutfx_job_first_result_seconds_bucket" in known
    assert "cutfx_queue_oldest_age_seconds" in known
    queries = [expr for _, expr in panel_queries()]
    queries += [rule["expr"] for rule in alert_rules()]
    for expr in queries:
        unknown = metric_names(expr) - known
        assert not unknown, f"{expr!r} names {unknown}, which cutfx does not export"


# --- the prometheus-operator's kinds -----------------------------------------------------------


def k8s_documents() -> dict[str, dict[str, Any]]:
    kustomization = yaml.safe_load((K8S_MONITORING / "kustomization.yaml").read_text())
    documents = {}
    for name in kustomization["resources"]:
        for document in yaml.safe_load_all((K8S_MONITORING / name).read_text()):
            documents[document["kind"]] = document
    return documents


def test_the_prometheus_rule_holds_the_same_rules():
    rule = k8s_documents()["PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["namespace"] == "cutfx"
    rules_file = yaml.safe_load((MONITORING / "rules.yml").read_text())
    assert rule["spec"]["groups"] == rules_file["groups"]


def test_the_pod_monitor_scrapes_the_api_pods_with_the_metrics_token(app):
    monitor = k8s_documents()["PodMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    api = next(
        doc
        for doc in yaml.safe_load_all(API_DEPLOYMENT.read_text())
        if doc and doc["kind"] == "Deployment"
    )
    pod_labels = api["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    (container,) = api["spec"]["template"]["spec"]["containers"]
    assert endpoint["port"] in {port["name"] for port in container["ports"]}
    assert endpoint["path"] in {rule.rule for rule in app.url_map.iter_rules()}
    credentials = endpoint["authorization"]["credentials"]
    assert {"secretRef": {"name": credentials["name"]}} in container["envFrom"]
    assert credentials["key"] == "CUTFX_METRICS_TOKEN"
    assert credentials["key"] in SETTING_NAMES


def test_the_compose_prometheus_config_passes_promtool(tmp_path):
    """As compose mounts it: the config beside the rules, the token in a secret file."""
    token = tmp_path / "token"
    token.write_text("metrics-token")
    config = (MONITORING / "prometheus.yml").read_text()
    assert "/run/secrets/cutfx_metrics_token" in config
    (tmp_path / "prometheus.yml").write_text(
        config.replace("/run/secrets/cutfx_metrics_token", str(token))
    )
    shutil.copy(MONITORING / "rules.yml", tmp_path / "rules.yml")
    checked = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
