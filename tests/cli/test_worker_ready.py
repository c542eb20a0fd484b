"""`cutfx worker-ready`, the workers' readiness probe, against heartbeats in a real Redis."""

from __future__ import annotations

import time

import pytest

from cli.main import main
from shared.workers import WorkerStatus, publish
from tests.conftest import UNIT_REDIS_URL


@pytest.fixture
def probe_env(monkeypatch, redis_client):
    monkeypatch.setenv("CUTFX_REDIS_URL", UNIT_REDIS_URL)
    return redis_client


def heartbeat(client, name: str, ready: bool) -> None:
    status = WorkerStatus(name=name, queues=("gpu",), ready=ready, pid=1, started_at=time.time())
    publish(client, status)


def test_a_ready_worker_on_this_host_passes(probe_env, capsys):
    heartbeat(probe_env, "gpu@pod-a", ready=True)
    assert main(["worker-ready", "--host", "pod-a"]) == 0
    assert "gpu@pod-a ready (gpu)" in capsys.readouterr().out


def test_a_worker_still_loading_its_model_fails(probe_env, capsys):
    heartbeat(probe_env, "gpu@pod-a", ready=False)
    assert main(["worker-ready", "--host", "pod-a"]) == 1
    assert "no ready worker on pod-a" in capsys.readouterr().out


def test_another_hosts_heartbeat_does_not_count(probe_env):
    heartbeat(probe_env, "gpu@pod-b", ready=True)
    heartbeat(probe_env, "gpu@pod-ab", ready=True)
    assert main(["worker-ready", "--host", "pod-a"]) == 1


def test_no_heartbeat_at_all_fails(probe_env):
    assert main(["worker-ready", "--host", "pod-a"]) == 1
