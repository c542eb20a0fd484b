"""A cutfx stack of its own for fault tests: a Redis on another loopback port, with
append-only persistence in a folder of the test's, and workers that the test may kill,
stop and restart one by one. The machine's Redis on 6379 is never touched."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import redis

from cli.stack import free_port, worker_commands
from shared.redis_location import redis_client
from shared.settings import Settings
from shared.workers import live_workers, ready_queues
from tests.conftest import start_worker_process, worker_env
from tests.helpers import sample_variant, submit

READY_TIMEOUT_S = 300
StartableT = TypeVar("StartableT", bound="Startable")
KINDS = ("gpu", "cpu", "webhooks")


class Startable(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


@contextlib.contextmanager
def running(processes: StartableT) -> Iterator[StartableT]:
    """`processes` started for the block and stopped after, also when starting failed
    half-way (a server up, its peers not)."""
    try:
        processes.start()
        yield processes
    finally:
        processes.stop()


class RedisServer:
    """redis-server on a loopback port, AOF fsynced at every write, data in `data_dir`."""

    def __init__(self, data_dir: Path, preferred_port: int, extra_args: Sequence[str] = ()) -> None:
        self.data_dir = data_dir
        self.port = free_port(preferred_port)
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.data_dir), "--appendonly", "yes", "--appendfsync", "always",
            "--save", "", "--maxmemory-policy", "noeviction", *self.extra_args,
        ]  # fmt: skip
        log = (self.data_dir / "redis.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return
            except redis.RedisError:
                time.sleep(0.1)
        raise RuntimeError(f"redis-server did not start on {self.port}")

    def stop(self) -> None:
        """A clean stop (SIGTERM): Redis finishes its append-only file and exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def kill(self) -> None:
        """SIGKILL, as a dead machine: no last write, no goodbye to its clients."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


class FaultStack:
    """Workers of each kind on `settings`, started, killed and replaced one at a time."""

    def __init__(self, settings: Settings, log_dir: Path, extra_env: dict[str, str]) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.env = worker_env(settings, extra_env)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.every_process: list[subprocess.Popen[bytes]] = []
        self.logs: dict[int, Path] = {}
        self.client = redis_client(settings.job_store_url, decode_responses=True)
        self._started = 0

    def start(
        self,
        kind: str,
        extra_env: dict[str, str] | None = None,
        command: list[str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """A worker of `kind` on the stack's environment, with `extra_env` over it; by
        `command` where given, else as production starts that kind."""
        self._started += 1
        prefix = f"fault-{uuid.uuid4().hex[:6]}-"
        command = command or worker_commands(prefix)[f"worker-{kind}"]
        log = self.log_dir / f"{kind}-{self._started}.log"
        env = {**self.env, **(extra_env or {})}
        process = start_worker_process(command, log, env, start_new_session=True)
        self.logs[process.pid] = log
        self.processes[kind] = process
        self.every_process.append(process)
        return process

    def start_all(self) -> None:
        for kind in KINDS:
            self.start(kind)
        self.wait_ready(KINDS)

    def wait_ready(self, kinds: tuple[str, ...], pid: int | None = None) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            workers = live_workers(self.client)
            if pid is not None:
                workers = [w for w in workers if w.pid == pid]
            if set(kinds) <= ready_queues(workers):
                return
            time.sleep(0.3)
        raise TimeoutError(f"{kinds} not ready; see {self.log_dir}")

    def log_of(self, process: subprocess.Popen[bytes]) -> Path:
        """The log a process this stack started writes to."""
        return self.logs[process.pid]

    def kill(self, kind: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send `sig` to the worker's main process only, as an OOM kill would."""
        os.kill(self.processes[kind].pid, sig)

    def stop_all(self) -> None:
        """Stop every process this stack started, and (by group) their pool children,
        orphans of killed workers included."""
        for process in self.every_process:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.every_process:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


# --- what the fault tests ask of the API ---------------------------------------------------


def job_of(api: Any, job_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = api.get(f"/v1/jobs/{job_id}").get_json()
    return answer


def wait_for(condition: Callable[[], object], timeout_s: float, message: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(message)
        time.sleep(0.2)


def submit_jobs(api: Any, count: int, **form: str) -> list[str]:
    return [submit(api, sample_variant(), **form).get_json()["id"] for _ in range(count)]
