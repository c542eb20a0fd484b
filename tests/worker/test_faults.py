"""Nothing lost when a worker, Redis or storage fails: real processes on a Redis of their own.

The stack here has its own redis-server (another loopback port, append-only
file fsynced at every write), its own workers, which the tests kill, stop and
replace, and the API in process. The machine's Redis on 6379 is never touched.
"""

from __future__ import annotations

import http.server
import io
import json
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from PIL import Image

from api import create_app
from api.health import queue_depths
from cli.stack import worker_commands
from shared.jobs import read_events
from shared.jobs.plan import ENTRY_PREFIX
from shared.queues import QUEUE_GPU, TASK_SEGMENT, UNACKED_INDEX_KEY
from shared.telemetry import TASKS, Metrics
from shared.workers import live_workers
from tests.conftest import make_settings, preferred_port
from tests.faults import FaultStack, RedisServer, job_of, submit_jobs, wait_for
from tests.helpers import FINISHED, log_records, sample_variant, submit, wait_all_finished
from tests.plugins import DEVICE_FAULT_MARKER_ENV, LINGERING_COLOUR, STORAGE_FAULT_MARKER_ENV
from worker.process import EXIT_DEVICE_FAILED, EXIT_MODEL_UNAVAILABLE

pytestmark = pytest.mark.e2e

#: The storage key at the end of a cache index entry's name (after its scope).
STORAGE_KEY = re.compile(r"(inputs|cutouts|results)/.+$")

#: The promise: a dead worker costs a job at most this long once a replacement runs.
RECOVERY_BUDGET_S = 60
EFFECT_LIMIT_S = 8  # longer than the "slow" effect (4 s), far shorter than "hang"
STORAGE_RETRY_S = 5
LOCK_TTL_S = 1
#: The least the settings allow (30 s by default): a dead worker's task is handed out again
#: a third as soon, so each kill costs the suite seconds, not half a minute.
VISIBILITY_TIMEOUT_S = 10
#: Jobs in flight across a Redis restart or a rolling restart: more than the workers hold
#: at once (one segment, two effects), so some wait on the queue and some are mid-task.
JOBS_IN_FLIGHT = 8


@pytest.fixture(scope="module")
def fault_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    return {name: root / name for name in ("redis", "storage", "logs")}


@pytest.fixture(scope="module")
def redis_server(fault_dirs):
    server = RedisServer(fault_dirs["redis"], preferred_port=preferred_port(6391))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fault_settings(redis_server, fault_dirs, checkpoint):
    return make_settings(
        redis_server.url,
        fault_dirs["storage"],
        model_ckpt=str(checkpoint),
        effect_time_limit_s=EFFECT_LIMIT_S,
        storage_retry_s=STORAGE_RETRY_S,
        webhook_lock_ttl_s=LOCK_TTL_S,
        visibility_timeout_s=VISIBILITY_TIMEOUT_S,
    )


@pytest.fixture(scope="module")
def outage_marker(fault_dirs):
    return fault_dirs["storage"].parent / "storage-outage"


@pytest.fixture(scope="module")
def device_fault_marker(fault_dirs):
    return fault_dirs["storage"].parent / "device-fault"


@pytest.fixture(scope="module")
def stack(fault_settings, fault_dirs, outage_marker, device_fault_marker):
    fault_dirs["logs"].mkdir(parents=True, exist_ok=True)
    markers = {
        STORAGE_FAULT_MARKER_ENV: str(outage_marker),
        DEVICE_FAULT_MARKER_ENV: str(device_fault_marker),
    }
    running = FaultStack(fault_settings, fault_dirs["logs"], markers)
    running.client.flushdb()
    running.start_all()
    yield running
    running.stop_all()


@pytest.fixture(scope="module")
def api(stack, fault_settings):
    return create_app({"TESTING": True, "CUTFX_SETTINGS": fault_settings}).test_client()


@pytest.fixture(scope="module")
def figures(artifacts_dir):
    """What each fault cost, written to the test artifacts (faults.md)."""
    lines: list[str] = []
    yield lines
    (artifacts_dir / "faults.md").write_text("\n".join(lines) + "\n")


def assert_each_result_announced_once(stack: FaultStack, job_id: str) -> None:
    events = read_events(stack.client, job_id, "0-0", None)
    names = [e.data["name"] for e in events if e.type.startswith("result.")]
    assert len(names) == len(set(names)), f"a result was announced twice: {names}"
    assert [str(e.type) for e in events].count("job.finished") == 1


def result_status(api, job_id: str, name: str) -> str:
    return str(job_of(api, job_id)["results"][name]["status"])


@pytest.mark.parametrize(
    ("kind", "running_result", "effects"),
    [("gpu", "cutout", "color"), ("cpu", "slow", "slow")],
)
def test_a_killed_worker_costs_a_job_at_most_a_minute(
    stack, api, figures, kind, running_result, effects
):
    job_ids = submit_jobs(api, 3, effects=effects)
    wait_for(
        lambda: result_status(api, job_ids[0], running_result) == "running",
        120,
        f"{running_result} never started",
    )
    killed_at = time.monotonic()
    stack.kill(kind, signal.SIGKILL)
    time.sleep(1)
    stack.start(kind)
    jobs = wait_all_finished(api, job_ids, 180)
    took = time.monotonic() - killed_at
    figures.append(f"SIGKILL {kind} worker mid-task: last of 3 jobs finished {took:.1f} s later")
    assert [job["status"] for job in jobs] == ["succeeded"] * 3
    assert took <= RECOVERY_BUDGET_S, f"{took:.0f} s from the kill to the last job finished"
    for job_id in job_ids:
        assert_each_result_announced_once(stack, job_id)
    stack.wait_ready((kind,))


def gpu_and_cpu_prefork() -> list[str]:
    """The production cpu worker's command, one pool process, serving the gpu queue too:
    a prefork pool whose processes load the model."""
    command = worker_commands("prefork-", cpu_concurrency=1)["worker-cpu"]
    queues = command.index("-Q") + 1
    return [*command[:queues], "gpu,cpu", *command[queues + 1 :]]


#: The two ways a gpu worker loads its model, and the status each stops with: solo (as
#: production runs it) in its main process; a prefork pool in each pool process, which
#: stops its main process by Celery's cold shutdown, and that exits 0.
BROKEN_GPU_WORKERS = ((None, EXIT_MODEL_UNAVAILABLE), (gpu_and_cpu_prefork(), None))


def test_a_gpu_worker_whose_model_does_not_load_stops_and_its_photos_wait(stack, api):
    stack.kill("gpu", signal.SIGTERM)
    stack.processes["gpu"].wait(timeout=60)
    (job_id,) = submit_jobs(api, 1)
    missing = {"CUTFX_MODEL_CKPT": "/nonexistent/checkpoint.pth"}
    for command, exit_status in BROKEN_GPU_WORKERS:
        broken = stack.start("gpu", missing, command)
        stopped_with = broken.wait(timeout=120)
        if exit_status is not None:
            assert stopped_with == exit_status
        stopping = log_records(stack.log_of(broken), '"critical"')
        assert stopping, f"{broken.args} did not say why it stopped"
        assert stopping[0]["msg"] == (
            "the model did not load: this worker stops before taking any job"
        )
        assert "/nonexistent/checkpoint.pth" in stopping[0]["reason"]
        # A prefork main process may have taken the photo's task before its pool process
        # failed; its cold shutdown hands it back. Neither runs or fails it.
        assert not log_records(stack.log_of(broken), '"task failed"')
        waiting = job_of(api, job_id)
        assert (waiting["status"], waiting["results"]["cutout"]["status"]) == (
            "queued",
            "pending",
        )
    stack.start("gpu")
    (job,) = wait_all_finished(api, [job_id], 180)
    assert job["status"] == "succeeded"
    stack.wait_ready(("gpu",))


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


def test_a_prefork_gpu_worker_is_ready_for_photos_only_from_the_pool_process_with_the_model(
    stack, api
):
    stack.kill("gpu", signal.SIGTERM)
    stack.processes["gpu"].wait(timeout=60)
    prefork = stack.start("gpu", None, gpu_and_cpu_prefork())
    stack.wait_ready(("gpu",))
    # The main process announces itself when Celery is up, apart from its pool's warm-up.
    wait_for(
        lambda: prefork.pid in {w.pid for w in live_workers(stack.client)},
        30,
        "the prefork main process never announced itself",
    )
    workers = {worker.pid: worker for worker in live_workers(stack.client)}
    main = workers[prefork.pid]
    (pool,) = [w for w in workers.values() if QUEUE_GPU in w.queues]
    pool_parent = parent_of(pool.pid)
    (job_id,) = submit_jobs(api, 1)
    (job,) = wait_all_finished(api, [job_id], 180)
    log = stack.log_of(prefork)
    stack.kill("gpu", signal.SIGTERM)
    prefork.wait(timeout=60)
    left = [w for w in live_workers(stack.client) if w.pid in (main.pid, pool.pid)]
    stack.start("gpu")
    stack.wait_ready(("gpu",))

    assert main.queues == ("cpu",), "the main process announces only what it serves itself"
    assert pool_parent == prefork.pid
    assert pool.ready
    assert pool.model_id
    assert pool.engine
    assert pool.name.rpartition("@")[2] == main.name.rpartition("@")[2], "on the worker's host"
    messages = [line["msg"] for line in log_records(log)]
    assert messages.index("model warm") < messages.index("pool process ready")
    assert job["status"] == "succeeded"
    assert left == [], "a stopped worker withdraws its pool process's entry too"


def test_a_gpu_worker_whose_device_fails_hands_the_photo_back_and_stops(
    stack, api, device_fault_marker
):
    failing = stack.processes["gpu"]
    device_fault_marker.touch()
    try:
        (job_id,) = submit_jobs(api, 1)
        stopped_with = failing.wait(timeout=120)
    finally:
        device_fault_marker.unlink()
    assert stopped_with == EXIT_DEVICE_FAILED
    (stopping,) = log_records(stack.log_of(failing), '"critical"')
    assert stopping["msg"] == (
        "the device failed: the photo goes back on its queue and this worker stops"
    )
    assert "CUDA error" in stopping["reason"]
    assert not log_records(stack.log_of(failing), '"task failed"')
    assert job_of(api, job_id)["status"] not in FINISHED
    stack.start("gpu")
    (job,) = wait_all_finished(api, [job_id], 180)
    assert job["status"] == "succeeded"
    stack.wait_ready(("gpu",))


class StallingReceiver(http.server.ThreadingHTTPServer):
    """Takes each webhook after `stall_s`; keeps every event it was sent, in order."""

    def __init__(self, stall_s: float) -> None:
        super().__init__(("127.0.0.1", 0), StallingHandler)
        self.stall_s = stall_s
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    def event_ids(self) -> list[str]:
        with self.lock:
            return [event["id"] for event in self.received]


class StallingHandler(http.server.BaseHTTPRequestHandler):
    server: StallingReceiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(self.server.stall_s)
        with self.server.lock:
            self.server.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def stream_ids(stack: FaultStack, job_id: str) -> list[str]:
    return [event.id for event in read_events(stack.client, job_id, "0-0", None)]


def test_a_killed_webhook_worker_costs_a_delivery_at_most_a_minute(stack, api, figures):
    receiver = StallingReceiver(stall_s=2)
    try:
        job_id = submit(
            api, sample_variant(), effects="color", callback_url=receiver.url
        ).get_json()["id"]
        wait_for(lambda: receiver.received, 120, "no webhook arrived")
        killed_at = time.monotonic()
        stack.kill("webhooks", signal.SIGKILL)
        time.sleep(1)
        stack.start("webhooks")
        wait_all_finished(api, [job_id], 120)
        expected = stream_ids(stack, job_id)
        wait_for(
            lambda: set(expected) <= set(receiver.event_ids()),
            RECOVERY_BUDGET_S,
            "events lost",
        )
        took = time.monotonic() - killed_at
        figures.append(
            f"SIGKILL webhooks worker mid-POST: every event delivered {took:.1f} s later"
        )
        assert took <= RECOVERY_BUDGET_S
        delivered = list(dict.fromkeys(receiver.event_ids()))
        assert delivered == expected, "each event at least once, in the stream's order"
    finally:
        receiver.shutdown()
    stack.wait_ready(("webhooks",))


def test_a_webhook_receiver_slower_than_the_lock_gets_each_event_once_in_order(stack, api):
    receiver = StallingReceiver(stall_s=LOCK_TTL_S * 2)
    try:
        job_id = submit(
            api, sample_variant(), effects="color,popart", callback_url=receiver.url
        ).get_json()["id"]
        wait_all_finished(api, [job_id], 120)
        expected = stream_ids(stack, job_id)
        wait_for(lambda: len(receiver.event_ids()) >= len(expected), 120, "events missing")
        time.sleep(LOCK_TTL_S * 4)  # room for a duplicate to show up, were there one
        assert receiver.event_ids() == expected
    finally:
        receiver.shutdown()


def test_a_hung_step_fails_its_result_as_timeout_and_the_worker_goes_on(stack, api):
    (job_id,) = submit_jobs(api, 1, effects="hang,color")
    (job,) = wait_all_finished(api, [job_id], 120)
    assert job["status"] == "partial"
    assert job["results"]["hang"]["error"]["code"] == "timeout"
    assert job["results"]["color"]["status"] == "succeeded"
    (next_job,) = wait_all_finished(api, submit_jobs(api, 1, effects="color"), 120)
    assert next_job["status"] == "succeeded"


def nothing_in_flight(client: redis.Redis) -> bool:
    """No task message waiting or handed out (the sweep may still hand one out again)."""
    return client.zcard(UNACKED_INDEX_KEY) == 0 and not any(queue_depths(client).values())


def test_a_cutout_longer_than_the_visibility_timeout_runs_once(stack, api):
    """Its worker keeps a running task's message invisible: else the sweep hands it out
    again once the visibility timeout (10 s here, 30 s by default) lapses, and a base-mode
    cutout on a CPU runs twice and counts a second attempt."""
    wait_for(lambda: nothing_in_flight(stack.client), 60, "earlier tests' tasks in flight")
    segments = Metrics(stack.client)
    before = segments.counter_value(TASKS, {"task": TASK_SEGMENT})
    photo = io.BytesIO()
    Image.new("RGB", (120, 90), LINGERING_COLOUR).save(photo, "PNG")

    (job,) = wait_all_finished(
        api, [submit(api, photo.getvalue(), effects="color").get_json()["id"]], 120
    )
    wait_for(lambda: nothing_in_flight(stack.client), 60, "a task still in flight")

    assert job["status"] == "succeeded"
    assert job["results"]["cutout"]["status"] == "succeeded"
    assert segments.counter_value(TASKS, {"task": TASK_SEGMENT}) - before == 1


def test_a_storage_outage_is_ridden_out(stack, api, outage_marker):
    outage_marker.touch()
    try:
        (job_id,) = submit_jobs(api, 1, effects="color")
        time.sleep(2)
    finally:
        outage_marker.unlink()
    (job,) = wait_all_finished(api, [job_id], 120)
    assert job["status"] == "succeeded"


def test_an_outage_past_the_retries_fails_the_result_and_nothing_points_at_nothing(
    stack, api, outage_marker, fault_settings
):
    outage_marker.touch()
    try:
        (job_id,) = submit_jobs(api, 1, effects="color")
        (job,) = wait_all_finished(api, [job_id], 120)
    finally:
        outage_marker.unlink()
    assert job["status"] == "failed"
    assert job["results"]["cutout"]["error"]["code"] == "storage_unavailable"
    storage = api.application.extensions["cutfx"].storage
    for entry in stack.client.scan_iter(ENTRY_PREFIX + "*"):
        key = STORAGE_KEY.search(entry).group()  # type: ignore[union-attr]
        assert storage.exists(key), f"the cache index points at {key}, which was never written"
    for event in read_events(stack.client, job_id, "0-0", None):
        url_key = event.data.get("result", {}).get("key")
        if url_key:
            assert storage.exists(url_key)


def test_a_redis_restart_loses_no_accepted_job(stack, api, redis_server, figures):
    job_ids = submit_jobs(api, JOBS_IN_FLIGHT, effects="color")
    time.sleep(2)
    redis_server.stop()
    try:
        answer = api.get(f"/v1/jobs/{job_ids[0]}")
        assert answer.status_code == 503
        assert answer.get_json()["error"]["code"] == "not_ready"
        refused = submit(api, sample_variant(), effects="color")
        assert refused.status_code == 503
        assert "error" in refused.get_json()
        time.sleep(3)
    finally:
        redis_server.start()
    jobs = wait_all_finished(api, job_ids, 300)
    succeeded = sum(job["status"] == "succeeded" for job in jobs)
    figures.append(
        f"Redis stopped and restarted with {JOBS_IN_FLIGHT} jobs in flight: "
        f"{succeeded} of {JOBS_IN_FLIGHT} finished"
    )
    assert [job["status"] for job in jobs] == ["succeeded"] * JOBS_IN_FLIGHT
    for job_id in job_ids:
        assert_each_result_announced_once(stack, job_id)
    stack.wait_ready(("gpu", "cpu", "webhooks"))


def test_a_rolling_restart_of_every_worker_loses_no_job(stack, api, figures):
    job_ids = submit_jobs(api, JOBS_IN_FLIGHT, effects="color,popart")
    for kind in ("gpu", "cpu", "webhooks"):
        time.sleep(2)
        old = stack.processes[kind]
        stack.kill(kind, signal.SIGTERM)  # warm shutdown: finish the task at hand, then go
        replacement = stack.start(kind)
        old.wait(timeout=120)
        stack.wait_ready((kind,), pid=replacement.pid)
    jobs = wait_all_finished(api, job_ids, 300)
    succeeded = sum(job["status"] == "succeeded" for job in jobs)
    figures.append(
        f"rolling SIGTERM restart of gpu, cpu, webhooks: {succeeded} of {JOBS_IN_FLIGHT} finished"
    )
    assert [job["status"] for job in jobs] == ["succeeded"] * JOBS_IN_FLIGHT
    for job_id in job_ids:
        assert_each_result_announced_once(stack, job_id)


def test_the_fault_stack_never_touched_the_machines_redis(redis_server):
    assert redis_server.port != 6379
    assert redis.Redis(port=6379).ping()
