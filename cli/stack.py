"""Starting a local cutfx: a gpu worker, a cpu worker and the API, as child processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from cli.client import CutfxClient

READY_TIMEOUT_S = 900
#: Found from the installed package, so the stack starts from any folder.
STOP_TIMEOUT_S = 20
WEBHOOK_THREADS = 8
GPU_THREADS_PER_BATCH_PHOTO = 2


def threads_per_process(processes: int) -> int:
    """Each of `processes` processes' share of this machine's cores, in threads."""
    return max(1, (os.cpu_count() or 1) // processes)


def thread_env(threads: int) -> dict[str, str]:
    """Thread counts the math libraries read at start-up: torch's (OpenMP, MKL), which
    the exported engines take too, OpenCV's, and numba's (transparent-background's
    dependencies import it)."""
    value = str(threads)
    return {
        "OMP_NUM_THREADS": value,
        "MKL_NUM_THREADS": value,
        "OPENCV_NUM_THREADS": value,
        "NUMBA_NUM_THREADS": value,
    }


def free_port(preferred: int) -> int:
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", preferred)) != 0:
            return preferred
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        return int(spare.getsockname()[1])


def gpu_pool(batch_max: int) -> list[str]:
    """The gpu worker's pool: solo runs one photo at a time; batching needs its segment
    tasks side by side, in threads, twice the batch so the next batch gathers while the
    last one's photos are finished and encoded."""
    if batch_max <= 1:
        return ["--pool", "solo"]
    return ["--pool", "threads", "-c", str(GPU_THREADS_PER_BATCH_PHOTO * batch_max)]


def worker_commands(
    node_prefix: str = "", cpu_concurrency: int = 2, batch_max: int = 0
) -> dict[str, list[str]]:
    """The three workers of one machine, as production runs them: a gpu process that
    loads the model (solo, or threads when CUTFX_BATCH_MAX asks for batches), prefork cpu
    processes for effects, a threads pool for webhooks."""
    worker = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker"]
    quiet = ["--without-gossip", "--without-mingle", "--loglevel", "INFO"]
    pools = {
        "gpu": gpu_pool(batch_max),
        "cpu": ["--pool", "prefork", "-c", str(cpu_concurrency)],
        "webhooks": ["--pool", "threads", "-c", str(WEBHOOK_THREADS)],
    }
    return {
        f"worker-{queue}": [*worker, "-Q", queue, "-n", f"{node_prefix}{queue}@%h", *pool, *quiet]
        for queue, pool in pools.items()
    }


class LocalStack:
    """The API and workers of one machine; with `replicas`, that many gpu and cpu worker
    processes side by side (one webhooks worker), each with `worker_env` added."""

    def __init__(
        self,
        log_dir: Path,
        port: int,
        cpu_concurrency: int = 2,
        replicas: int = 1,
        worker_env: dict[str, str] | None = None,
        batch_max: int = 0,
    ) -> None:
        self.log_dir = log_dir
        self.port = port
        self.cpu_concurrency = cpu_concurrency
        self.replicas = replicas
        self.worker_env = worker_env or {}
        #: CUTFX_BATCH_MAX of the gpu workers: past 1, their pool runs threads.
        self.batch_max = batch_max
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for index in range(self.replicas):
            prefix = f"r{index}-" if self.replicas > 1 else ""
            commands = worker_commands(prefix, self.cpu_concurrency, self.batch_max)
            for name, command in commands.items():
                if index and name == "worker-webhooks":
                    continue
                self._spawn(f"{prefix}{name}", command, self.worker_env)
        self._spawn(
            "api",
            [
                sys.executable, "-m", "cli", "serve",
                "--bind", f"127.0.0.1:{self.port}", "--workers", "1",
            ],
        )  # fmt: skip

    def _spawn(
        self, name: str, command: list[str], extra_env: dict[str, str] | None = None
    ) -> None:
        log = (self.log_dir / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(extra_env or {})},
            start_new_session=True,
        )

    def wait_ready(self, client: CutfxClient, on_wait: object = None) -> float:
        started = time.monotonic()
        last_reason = ""
        while time.monotonic() - started < READY_TIMEOUT_S:
            ready, reason = client.ready()
            if ready:
                return time.monotonic() - started
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited; see {self.log_dir / (name + '.log')}")
            if reason != last_reason and callable(on_wait):
                on_wait(reason)
                last_reason = reason
            time.sleep(0.5)
        raise TimeoutError(f"not ready after {READY_TIMEOUT_S} s: {last_reason}")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
