"""deploy/k8s: every manifest valid against the Kubernetes schemas (offline, through
kubernetes-validate), and every command, probe, queue, port and setting it names real
in the code, as tests/test_deployment.py checks the compose file."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import kubernetes_validate
import pytest
import yaml

from api.health import WARMUP_SIGNAL_KEY
from cli.main import build_parser
from shared.queues import (
    HARD_LIMIT_GRACE_S,
    PRIORITY_BATCH,
    PRIORITY_BY_RANK,
    PRIORITY_OTHER,
    PRIORITY_PRIMARY,
    PRIORITY_STEPS,
    QUEUE_CPU,
    QUEUE_GPU,
    QUEUE_WEBHOOKS,
)
from shared.settings import DEFAULT_BIND, DEFAULT_SEGMENT_TIME_LIMIT_S, ENV_PREFIX, Settings
from tests.helpers import assert_the_cli_serves
from worker.batching import DEFAULT_CUDA_BATCH_MAX

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "deploy" / "k8s"
#: The oldest Kubernetes release the manifests are written for (GKE's regular channel).
KUBERNETES_VERSION = "1.33.0"
KEDA_API = "keda.sh/v1alpha1"
KUSTOMIZATION = yaml.safe_load((K8S / "kustomization.yaml").read_text())
SETTING_NAMES = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
WORKER_QUEUES = {
    "cutfx-worker-gpu": QUEUE_GPU,
    "cutfx-worker-cpu": QUEUE_CPU,
    "cutfx-worker-webhooks": QUEUE_WEBHOOKS,
}
#: The thread-pool sizes torch, MKL, OpenCV and numba read at start-up.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENCV_NUM_THREADS", "NUMBA_NUM_THREADS")
SECRETS_PRODUCTION_NEEDS = {
    "CUTFX_API_KEYS": "key-one,key-two",
    "CUTFX_SIGNING_KEY": "0" * 64,
    "CUTFX_METRICS_TOKEN": "metrics-token",
    "CUTFX_REDIS_URL": "redis+sentinel://a:26379,b:26379,c:26379/cutfx/0",
}


def load_documents() -> list[dict[str, Any]]:
    documents = []
    for name in KUSTOMIZATION["resources"]:
        documents += [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]
    return documents


DOCUMENTS = load_documents()


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in DOCUMENTS if doc["kind"] == kind}


DEPLOYMENTS = of_kind("Deployment")


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def option(command: list[str], flag: str) -> str:
    assert flag in command, f"{flag} missing from {command}"
    return command[command.index(flag) + 1]


def test_the_kustomization_lists_every_manifest_and_only_files_that_exist():
    listed = set(KUSTOMIZATION["resources"])
    on_disk = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


@pytest.mark.parametrize(
    "document",
    [doc for doc in DOCUMENTS if doc["apiVersion"] != KEDA_API],
    ids=lambda doc: f"{doc['kind']}/{doc['metadata']['name']}",
)
def test_each_manifest_is_valid_against_the_kubernetes_schema(document):
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_kinds_a_platform_needs_are_all_there():
    assert set(DEPLOYMENTS) == {"cutfx-api", *WORKER_QUEUES}
    assert set(of_kind("Service")) == {"cutfx-api"}
    assert set(of_kind("PodDisruptionBudget")) >= {"cutfx-api", "cutfx-worker-gpu"}
    assert set(of_kind("ScaledObject")) == {"cutfx-worker-gpu", "cutfx-worker-cpu"}


@pytest.mark.parametrize("name", sorted(WORKER_QUEUES))
def test_worker_commands_name_a_real_app_their_queue_and_a_node_per_host(name):
    command = container(DEPLOYMENTS[name])["command"]
    assert command[:2] == ["celery", "-A"]
    assert importlib.util.find_spec(option(command, "-A")) is not None
    queue = WORKER_QUEUES[name]
    assert option(command, "-Q") == queue
    # The probes find this worker as <queue>@<pod name>.
    assert option(command, "-n") == f"{queue}@%h"


@pytest.mark.parametrize("name", sorted(WORKER_QUEUES))
def test_worker_probes_are_real_cli_commands_about_their_own_worker(name):
    spec = container(DEPLOYMENTS[name])
    parser = build_parser()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        if probe not in spec:
            continue
        command = spec[probe]["exec"]["command"]
        assert command[0] == "cutfx"
        args = parser.parse_args(command[1:])
        if args.command == "worker-ping":
            assert args.kind == WORKER_QUEUES[name]
    assert spec["readinessProbe"]["exec"]["command"] == ["cutfx", "worker-ready"]
    assert spec["livenessProbe"]["exec"]["command"][:2] == ["cutfx", "worker-ping"]


def test_the_gpu_worker_takes_one_gpu_on_a_gpu_node_and_batches():
    deployment = DEPLOYMENTS["cutfx-worker-gpu"]
    pod = deployment["spec"]["template"]["spec"]
    spec = container(deployment)
    assert spec["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert option(spec["command"], "--pool") == "threads"
    assert int(option(spec["command"], "-c")) == 2 * DEFAULT_CUDA_BATCH_MAX
    # A warm shutdown lets the photo at hand finish within its limits.
    grace = pod["terminationGracePeriodSeconds"]
    assert grace >= DEFAULT_SEGMENT_TIME_LIMIT_S + HARD_LIMIT_GRACE_S


def test_the_api_command_probes_and_ports_are_the_apps(app):
    deployment = DEPLOYMENTS["cutfx-api"]
    spec = container(deployment)
    command = spec["command"]
    assert command == ["cutfx", "serve"]
    assert_the_cli_serves(command[1:])
    ports = {port["name"]: port["containerPort"] for port in spec["ports"]}
    assert ports["http"] == int(DEFAULT_BIND.rpartition(":")[2])
    routes = {rule.rule for rule in app.url_map.iter_rules()}
    assert spec["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert spec["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"/readyz", "/healthz"} <= routes
    (service,) = of_kind("Service").values()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_every_pod_reads_the_settings_and_secrets_by_reference():
    accounts = set(of_kind("ServiceAccount"))
    images = {image["name"] for image in KUSTOMIZATION["images"]}
    for name, deployment in DEPLOYMENTS.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] in accounts, name
        assert pod["securityContext"]["runAsNonRoot"] is True
        spec = container(deployment)
        assert spec["image"] in images, name
        sources = spec["envFrom"]
        assert {"configMapRef": {"name": "cutfx-settings"}} in sources
        assert {"secretRef": {"name": "cutfx-secrets"}} in sources
        names = {item["name"] for item in spec.get("env", [])}
        assert not any(n.startswith(ENV_PREFIX) for n in names), "settings: ConfigMap, Secret"


@pytest.mark.parametrize("name", ["cutfx-worker-gpu", "cutfx-worker-cpu"])
def test_model_and_effect_workers_share_their_cpu_request_out_as_threads(name):
    """The math libraries would size their pools by the node's cores; each process gets
    its share of the pod's CPU request instead."""
    spec = container(DEPLOYMENTS[name])
    command = spec["command"]
    processes = 1 if option(command, "--pool") == "threads" else int(option(command, "-c"))
    share = int(spec["resources"]["requests"]["cpu"]) // processes
    env = {item["name"]: item["value"] for item in spec["env"]}
    assert env == dict.fromkeys(THREAD_VARIABLES, str(share))


def test_the_settings_are_real_and_with_the_secrets_pass_the_production_checks():
    (config,) = of_kind("ConfigMap").values()
    data = config["data"]
    assert set(data) <= SETTING_NAMES, set(data) - SETTING_NAMES
    assert not set(data) & set(SECRETS_PRODUCTION_NEEDS), "secrets belong in the Secret"
    settings = Settings.from_env({**data, **SECRETS_PRODUCTION_NEEDS})
    assert settings.production_problems() == []
    assert settings.storage == "gcs"
    assert settings.gcs_signer_email, "v4 URLs signed by IAM: no key file in the pods"


def test_disruption_budgets_select_real_deployments():
    for name, budget in of_kind("PodDisruptionBudget").items():
        labels = budget["spec"]["selector"]["matchLabels"]
        selected = [
            d for d in DEPLOYMENTS.values() if d["spec"]["selector"]["matchLabels"] == labels
        ]
        assert len(selected) == 1, name


def queue_lists(queue: str, priority: int) -> str:
    """The Redis list Celery keeps `queue`'s messages of `priority` in."""
    step = max(s for s in PRIORITY_STEPS if s <= priority)
    return queue if step == 0 else f"{queue}:{step}"


#: The seed's business hours, when a warm GPU worker waits for photos.
BUSINESS_HOURS = (9, 23)


def business_hours_floor(spec: dict[str, Any]) -> int:
    """The replicas a KEDA cron trigger holds from 09:00 to 23:00 (0 without one)."""
    for trigger in spec["triggers"]:
        if trigger["type"] != "cron":
            continue
        metadata = trigger["metadata"]
        start, end = (metadata[edge].split() for edge in ("start", "end"))
        assert [start[0], end[0]] == ["0", "0"], "on the hour"
        assert (int(start[1]), int(end[1])) == BUSINESS_HOURS
        assert start[2:] == end[2:] == ["*", "*", "*"], "every day"
        ZoneInfo(metadata["timezone"])  # a real IANA zone, or this raises
        return int(metadata["desiredReplicas"])
    return 0


def test_the_gpu_workers_scale_to_zero_outside_business_hours_and_the_api_stays_ready():
    spec = of_kind("ScaledObject")["cutfx-worker-gpu"]["spec"]
    assert spec["minReplicaCount"] == 0
    assert business_hours_floor(spec) == 1
    (config,) = of_kind("ConfigMap").values()
    settings = Settings.from_env({**config["data"], **SECRETS_PRODUCTION_NEEDS})
    assert QUEUE_GPU not in settings.ready_queues, "else the API is unready all night"
    assert QUEUE_CPU in settings.ready_queues


def test_autoscaling_reads_the_lists_the_queues_really_use_with_a_warm_minimum():
    authentications = set(of_kind("TriggerAuthentication"))
    wanted = {
        "cutfx-worker-gpu": {
            *(queue_lists(QUEUE_GPU, priority) for priority in PRIORITY_BY_RANK),
            queue_lists(QUEUE_GPU, PRIORITY_BATCH),
            WARMUP_SIGNAL_KEY,
        },
        "cutfx-worker-cpu": {
            queue_lists(QUEUE_CPU, PRIORITY_PRIMARY),
            queue_lists(QUEUE_CPU, PRIORITY_OTHER),
            queue_lists(QUEUE_CPU, PRIORITY_BATCH),
        },
    }
    for name, scaled in of_kind("ScaledObject").items():
        spec = scaled["spec"]
        assert spec["scaleTargetRef"]["name"] == name
        assert name in DEPLOYMENTS
        # A warm minimum: always, or (the gpu workers, which scale to zero at night) by
        # a schedule over business hours.
        assert spec["minReplicaCount"] >= 1 or business_hours_floor(spec) >= 1
        assert spec["maxReplicaCount"] > spec["minReplicaCount"]
        lists = set()
        for trigger in spec["triggers"]:
            if trigger["type"] == "cron":
                continue
            assert trigger["type"] == "redis-sentinel"
            assert trigger["authenticationRef"]["name"] in authentications
            metadata = trigger["metadata"]
            assert metadata["sentinelMaster"] == "cutfx"
            assert int(metadata["listLength"]) > 0
            lists.add(metadata["listName"])
        assert lists == wanted[name]
