"""Warm workers announce themselves; the API's readiness follows their heartbeats."""

from __future__ import annotations

import threading
import time

import pytest
import redis

import worker.periodic
from api.health import WARMUP_SIGNAL_KEY, WARMUP_SIGNAL_TTL_S
from cli.main import main
from shared.queues import QUEUE_GPU
from shared.workers import HEARTBEAT_PREFIX, HEARTBEAT_TTL_S, live_workers
from tests.conftest import settings_env
from tests.faults import wait_for
from tests.helpers import log_records
from worker.engines import ENGINES
from worker.periodic import Heartbeat, new_status

#: How long after a worker is ready in Redis its 'worker ready' line may take.
READY_LINE_TIMEOUT_S = 10

pytestmark = pytest.mark.e2e


def test_readyz_counts_ready_workers_per_queue(e2e_client):
    response = e2e_client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json()["queues"] == {"gpu": 1, "cpu": 1}


def test_warmup_reports_a_ready_gpu_worker_and_leaves_a_signal_that_expires(e2e_app, e2e_client):
    body = e2e_client.post("/v1/warmup").get_json()
    assert body["ready"] is True
    assert body["gpu_workers"] == 1
    broker = e2e_app.extensions["cutfx"].broker
    assert broker.llen(WARMUP_SIGNAL_KEY) >= 1
    assert 0 < broker.ttl(WARMUP_SIGNAL_KEY) <= WARMUP_SIGNAL_TTL_S


def test_the_gpu_heartbeat_carries_the_model_and_device(e2e_app, e2e_settings, checkpoint):
    from worker.checkpoint import model_id

    workers = live_workers(e2e_app.extensions["cutfx"].redis)
    (gpu,) = [w for w in workers if "gpu" in w.queues]
    assert gpu.ready
    assert gpu.model_id == model_id("fast", checkpoint)
    assert gpu.device == "cpu"
    assert gpu.precision in cpu_precisions(e2e_settings)
    assert gpu.engine in ENGINES
    assert ENGINES[gpu.engine].precision == gpu.precision
    assert gpu.random_weights is True
    assert gpu.ready_after_s is not None
    assert gpu.ready_after_s > 0


def cpu_precisions(settings) -> set[str]:
    """fp32, and bf16 on a CPU with bf16 instructions (unless fp32 is asked for): the
    worker runs the fastest engine that held parity at one of them."""
    from worker.engine_choice import allowed_precisions

    return allowed_precisions("cpu", settings.precision)


def test_the_gpu_worker_warms_the_model_before_it_announces_itself(workers, e2e_settings):
    log = workers.log_dir / "worker-gpu.log"
    # The worker announces itself in Redis, which the fixture waits for, and then logs it.
    wait_for(lambda: log_records(log, '"worker ready"'), READY_LINE_TIMEOUT_S, "no ready line")
    lines = log_records(log)
    messages = [line["msg"] for line in lines]
    assert (
        messages.index("model loaded")
        < messages.index("model warm")
        < messages.index("worker ready")
    )
    loaded = next(line for line in lines if line["msg"] == "model loaded")
    assert loaded["device"] == "cpu"
    assert loaded["precision"] in cpu_precisions(e2e_settings)
    assert loaded["precision"] == ENGINES[loaded["engine"]].precision
    assert loaded["engine_reason"]


def test_the_worker_probes_find_a_live_worker_and_miss_an_absent_one(
    e2e_app, e2e_settings, monkeypatch
):
    for name, value in settings_env(e2e_settings).items():
        monkeypatch.setenv(name, value)
    workers = live_workers(e2e_app.extensions["cutfx"].redis)
    (gpu,) = [w for w in workers if "gpu" in w.queues]
    host = gpu.name.rpartition("@")[2]
    assert main(["worker-ready", "--host", host]) == 0
    assert main(["worker-ready", "--host", "no-such-host"]) == 1
    assert main(["worker-ping", "--node", gpu.name]) == 0
    assert main(["worker-ping", "--node", "gpu@no-such-host", "--timeout", "1"]) == 1


def test_the_heartbeat_announces_the_worker_at_start_and_withdraws_it_at_stop(text_redis):
    """Ready the moment it starts (not a beat later), gone the moment it stops (not when
    its entry expires)."""
    status = new_status("heartbeat-test@here", (QUEUE_GPU,), time.time())
    heartbeat = Heartbeat(text_redis, status)
    heartbeat.start()
    try:
        assert status in live_workers(text_redis)
        assert 0 < text_redis.ttl(HEARTBEAT_PREFIX + status.name) <= HEARTBEAT_TTL_S
    finally:
        heartbeat.stop()
        heartbeat.join()
    assert status.name not in {worker.name for worker in live_workers(text_redis)}


def test_a_worker_that_serves_no_queue_yet_is_alive_but_not_ready(text_redis):
    """A prefork pool's main process serving the gpu queue alone: until a pool process
    announces it with its model warm, nothing on its host is ready."""
    status = new_status("gpu@prefork-host", (), time.time())
    heartbeat = Heartbeat(text_redis, status)
    heartbeat.start()
    try:
        (found,) = [w for w in live_workers(text_redis) if w.name == status.name]
    finally:
        heartbeat.stop()
    assert found.ready is False


class SecondBeatHeld(redis.Redis):
    """A client of the test's Redis whose second heartbeat SET is held until `finish` is
    set: a beat under way when the worker stops."""

    def __init__(self, client: redis.Redis) -> None:
        super().__init__(connection_pool=client.connection_pool)
        self.beats = 0
        self.beating = threading.Event()
        self.finish = threading.Event()

    def set(self, *args, **kwargs):
        self.beats += 1
        if self.beats == 2:
            self.beating.set()
            self.finish.wait(10)
        return super().set(*args, **kwargs)


def test_a_beat_under_way_at_stop_does_not_bring_the_entry_back(text_redis, monkeypatch):
    """Withdrawn after the last beat ends, not before it: a stopped worker is never
    counted ready again."""
    monkeypatch.setattr(worker.periodic, "HEARTBEAT_INTERVAL_S", 0.05)
    client = SecondBeatHeld(text_redis)
    status = new_status("heartbeat-race@here", (QUEUE_GPU,), time.time())
    heartbeat = Heartbeat(client, status)
    heartbeat.start()
    assert client.beating.wait(10), "no second beat"
    stopping = threading.Thread(target=heartbeat.stop)
    stopping.start()
    time.sleep(0.2)
    client.finish.set()
    stopping.join(10)
    heartbeat.join(10)
    assert not text_redis.exists(HEARTBEAT_PREFIX + status.name)
