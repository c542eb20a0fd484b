"""The deployment files name only commands, modules, queues, paths and settings that exist.

No Docker engine runs on the build machines, so this is what can be checked
here; scripts/bake-worker.sh, which the worker image runs, runs in CI too.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import shlex
from pathlib import Path

import pytest
import yaml

from shared.queues import QUEUE_CPU, QUEUE_GPU, QUEUE_WEBHOOKS
from shared.settings import ENV_PREFIX, Settings
from tests.helpers import assert_the_cli_serves
from worker.batching import DEFAULT_CUDA_BATCH_MAX

REPO = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
KNOWN_QUEUES = {QUEUE_GPU, QUEUE_CPU, QUEUE_WEBHOOKS}
SETTING_NAMES = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
CELERY_POOLS = {"solo", "prefork", "threads", "gevent", "eventlet"}


def option(command: list[str], flag: str) -> str:
    assert flag in command, f"{flag} missing from {command}"
    return command[command.index(flag) + 1]


def test_the_services_of_one_machine():
    # `docker compose up` starts those without a profile; monitoring is asked for.
    started = {name for name, service in SERVICES.items() if "profiles" not in service}
    assert started == {"redis", "api", "worker-gpu", "worker-cpu", "worker-webhooks"}
    assert {name for name in SERVICES if name not in started} == {"prometheus"}


def test_the_monitoring_profile_runs_prometheus_with_the_rules_and_the_token():
    prometheus = SERVICES["prometheus"]
    assert prometheus["profiles"] == ["monitoring"]
    mounts = {volume.split(":")[0]: volume.split(":")[1] for volume in prometheus["volumes"]}
    config = mounts["./deploy/monitoring/prometheus.yml"]
    rules = mounts["./deploy/monitoring/rules.yml"]
    for source in ("./deploy/monitoring/prometheus.yml", "./deploy/monitoring/rules.yml"):
        assert (REPO / source).is_file()
    assert f"--config.file={config}" in prometheus["command"]
    scraped = yaml.safe_load((REPO / "deploy/monitoring/prometheus.yml").read_text())
    # Rule files are found relative to the config file: both in one folder.
    assert [str(Path(config).parent / name) for name in scraped["rule_files"]] == [rules]
    (job,) = scraped["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["api:8000"]
    (secret,) = prometheus["secrets"]
    assert job["authorization"]["credentials_file"] == f"/run/secrets/{secret}"
    assert COMPOSE["secrets"][secret] == {"environment": "CUTFX_METRICS_TOKEN"}


def test_redis_persists_never_evicts_and_reports_health():
    redis = SERVICES["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert "--maxmemory " in command, "a memory cap, so a full Redis refuses instead of dying"
    assert redis["healthcheck"]["test"]


def test_every_cutfx_service_shares_one_settings_block_of_real_settings():
    raw = (REPO / "docker-compose.yml").read_text()
    assert raw.count("environment: *cutfx-settings") == 4, "one YAML anchor serves all"
    for name in ("api", "worker-gpu", "worker-cpu", "worker-webhooks"):
        environment = SERVICES[name]["environment"]
        assert set(environment) <= SETTING_NAMES, set(environment) - SETTING_NAMES


def assert_a_real_worker_command(command: list[str]) -> None:
    """A celery command naming a real app, known queues and a real pool."""
    assert command[:2] == ["celery", "-A"]
    app_module = option(command, "-A")
    assert importlib.util.find_spec(app_module) is not None
    assert set(option(command, "-Q").split(",")) <= KNOWN_QUEUES
    if "--pool" in command:
        assert option(command, "--pool") in CELERY_POOLS


@pytest.mark.parametrize("name", ["worker-gpu", "worker-cpu", "worker-webhooks"])
def test_worker_commands_name_a_real_app_queues_and_pool(name):
    assert_a_real_worker_command(SERVICES[name]["command"])


def test_the_queues_are_all_served():
    served = set()
    for name in ("worker-gpu", "worker-cpu", "worker-webhooks"):
        served |= set(option(SERVICES[name]["command"], "-Q").split(","))
    assert served == KNOWN_QUEUES


def readme_worker_commands() -> list[list[str]]:
    """The celery commands of the README's "Running it for real", comments left out."""
    section = (REPO / "README.md").read_text().split("## Running it for real", 1)[1]
    block = section.split("```sh", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines() if line.startswith("celery ")]
    return [shlex.split(line, comments=True) for line in lines]


def test_the_readmes_commands_serve_every_queue_with_real_apps_and_pools():
    served = set()
    for command in readme_worker_commands():
        assert_a_real_worker_command(command)
        served |= set(option(command, "-Q").split(","))
    assert served == KNOWN_QUEUES, "a queue nobody serves keeps its tasks for ever"


def test_the_gpu_worker_reserves_a_gpu_and_batches_in_one_process():
    gpu = SERVICES["worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    # Threads, so the segment tasks' forwards batch; twice the CUDA batch in flight.
    assert option(gpu["command"], "--pool") == "threads"
    assert int(option(gpu["command"], "-c")) == 2 * DEFAULT_CUDA_BATCH_MAX


def test_the_api_command_names_a_real_config_and_factory():
    command = SERVICES["api"]["command"]
    assert command == ["cutfx", "serve"]
    assert_the_cli_serves(command[1:])


def dockerfile_lines(name: str) -> list[str]:
    text = (REPO / name).read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize("name", ["Dockerfile.api", "Dockerfile.worker"])
def test_dockerfiles_copy_paths_that_exist_and_run_as_non_root(name):
    lines = dockerfile_lines(name)
    for line in lines:
        if line.startswith("COPY "):
            for source in shlex.split(line)[1:-1]:
                assert (REPO / source).exists(), f"{name}: {source} does not exist"
        for script in re.findall(r"scripts/[\w.-]+", line):
            assert (REPO / script).is_file(), f"{name}: {script} does not exist"
    users = [line for line in lines if line.startswith("USER ")]
    assert users
    assert users[-1] != "USER root"
    assert any(line.startswith("HEALTHCHECK ") for line in lines)


def test_the_api_image_has_no_torch():
    installs = [line for line in dockerfile_lines("Dockerfile.api") if "pip install" in line]
    assert installs
    assert not any("model" in line or "torch" in line for line in installs)


def test_the_worker_image_bakes_with_the_script_ci_runs():
    lines = dockerfile_lines("Dockerfile.worker")
    assert any("bash scripts/bake-worker.sh" in line for line in lines)
    assert "bake-worker.sh" in (REPO / "scripts" / "test.sh").read_text()
    assert any(line.startswith("ARG CHECKPOINT_SHA256") for line in lines)


def test_compose_requires_the_keys_and_runs_in_production():
    raw = (REPO / "docker-compose.yml").read_text()
    settings = COMPOSE["x-cutfx-settings"]
    assert settings["CUTFX_ENV"] == "production"
    for name in ("CUTFX_API_KEYS", "CUTFX_SIGNING_KEY", "CUTFX_METRICS_TOKEN"):
        assert re.search(rf"{name}: \$\{{{name}:\?", raw), f"{name} must be required"


def test_every_cutfx_service_comes_back_after_it_exits():
    for name in ("api", "worker-gpu", "worker-cpu", "worker-webhooks"):
        assert SERVICES[name]["restart"] == "unless-stopped", name


@pytest.mark.parametrize("name", ["Dockerfile.api", "Dockerfile.worker"])
def test_the_images_compile_the_projects_modules_where_workers_import_them(name):
    compiles = [line for line in dockerfile_lines(name) if "compileall" in line]
    assert compiles
    copied = {
        shlex.split(line)[1]
        for line in dockerfile_lines(name)
        if line.startswith("COPY ") and (REPO / shlex.split(line)[1]).is_dir()
    }
    python_packages = {path for path in copied if (REPO / path / "__init__.py").is_file()}
    assert python_packages
    assert all(f" {package}" in compiles[0] for package in python_packages)


def test_the_build_context_leaves_out_the_venv_bytecode_and_local_state():
    ignored = set((REPO / ".dockerignore").read_text().splitlines())
    assert {".git/", ".venv/", "**/__pycache__/", "var/", "demo-output/"} <= ignored
