"""Fixtures: real Redis (flushed), real storage folders, real Celery workers with the real model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from cli.stack import thread_env, threads_per_process
from shared.settings import ENV_PREFIX, Settings
from tests.helpers import stops_with_the_test_process

REPO = Path(__file__).resolve().parents[1]

# pytest-xdist runs the suite in up to three processes (scripts/test.sh): each gets Redis
# databases of its own for every purpose below, so one process's workers, queues and
# flushes never meet another's, and its own ports to prefer for the servers it starts.
# Database 0 is the default service's and 12 the benchmarks'.
TEST_DATABASES = {
    #: Unit tests: flushed before each test.
    "CUTFX_TEST_REDIS_URL": (15, 7, 3),
    #: The session's workers.
    "CUTFX_TEST_E2E_REDIS_URL": (14, 6, 2),
    #: A module's own workers (base mode, batching, GCS, cancel, the demo): a process runs
    #: one module at a time, and each flushes this database before and after.
    "CUTFX_TEST_STACK_REDIS_URL": (13, 5, 1),
}
#: A test process's index: 0 alone, or gw0, gw1, gw2 under pytest-xdist.
TEST_PROCESS = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
MAX_TEST_PROCESSES = 3
if TEST_PROCESS >= MAX_TEST_PROCESSES:
    raise RuntimeError(
        f"the suite has Redis databases for {MAX_TEST_PROCESSES} test processes: "
        f"use -n {MAX_TEST_PROCESSES} at most"
    )


def redis_url_for(variable: str) -> str:
    """The Redis database of one purpose (a key of TEST_DATABASES) in this test process. The
    variable set by hand wins in the first process; the second always takes its own, since
    it inherits the environment the first was given."""
    chosen = os.environ.get(variable) if TEST_PROCESS == 0 else None
    return chosen or f"redis://127.0.0.1:6379/{TEST_DATABASES[variable][TEST_PROCESS]}"


#: Added to the ports a test process prefers for the servers it starts.
PORT_OFFSET = 500 * TEST_PROCESS


def preferred_port(port: int) -> int:
    """`port` for this test process: each process prefers ports of its own."""
    return port + PORT_OFFSET


#: Unit tests flush this database before each test.
UNIT_REDIS_URL = redis_url_for("CUTFX_TEST_REDIS_URL")
#: The workers' database: flushed once per session, since the workers' heartbeats live there.
E2E_REDIS_URL = redis_url_for("CUTFX_TEST_E2E_REDIS_URL")
WORKER_READY_TIMEOUT_S = 600
PLUGINS = "tests.plugins"


#: Tests submit far faster than any customer may; the limit tests set their own.
TEST_RATE_LIMIT = "100000/minute"
#: A background removal's limit in the suite. The default (120 s) fits a base-mode forward
#: on a dedicated CPU; in the suite three test processes share two cores, and a slow
#: 2-core EPYC (20 GFLOP/s a core) loaded the base model and ran its first base forward in
#: more than 120 s, so the escalation test failed on a timeout it does not test. The fault
#: tests that test a step's limit use an effect's (effect_time_limit_s).
TEST_SEGMENT_TIME_LIMIT_S = 600


def make_settings(redis_url: str, storage_dir: Path, **overrides: object) -> Settings:
    """Development settings (asked for explicitly, as the tests and the demo do), webhooks
    allowed to reach the loopback receivers of the tests, limits out of the way (the
    rates, the active jobs a key may have, a background removal's time)."""
    values: dict[str, object] = {
        "env": "development",
        "redis_url": redis_url,
        "local_storage_dir": storage_dir,
        "signing_key": "test-signing-key",
        "model_mode": "fast",
        "effect_plugins": (PLUGINS,),
        "webhook_allow_loopback": True,
        "submit_rate_limit": TEST_RATE_LIMIT,
        "read_rate_limit": TEST_RATE_LIMIT,
        "max_active_jobs_per_key": 10_000,
        "segment_time_limit_s": TEST_SEGMENT_TIME_LIMIT_S,
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(UNIT_REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def text_redis(redis_client: redis.Redis) -> redis.Redis:
    """The unit database through a client that decodes replies, as the job store needs."""
    return redis.Redis.from_url(UNIT_REDIS_URL, decode_responses=True)


@pytest.fixture
def settings(redis_client: redis.Redis, tmp_path: Path) -> Settings:
    return make_settings(UNIT_REDIS_URL, tmp_path / "storage")


@pytest.fixture
def app(settings: Settings):
    from api import create_app

    return create_app({"TESTING": True, "CUTFX_SETTINGS": settings})


@pytest.fixture
def client(app):
    return app.test_client()


# --- the end-to-end stack: real workers on their own Redis database -------------------------


@pytest.fixture(scope="session")
def checkpoint() -> Path:
    from worker.checkpoint import ensure_random_checkpoint

    return ensure_random_checkpoint("fast", Settings.from_env().cache_dir)


@pytest.fixture(scope="session")
def e2e_storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e-storage")


@pytest.fixture(scope="session")
def crash_marker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("crash") / "crashed"


@pytest.fixture(scope="session")
def e2e_settings(checkpoint: Path, e2e_storage: Path) -> Settings:
    return make_settings(E2E_REDIS_URL, e2e_storage, model_ckpt=str(checkpoint))


def settings_env(settings: Settings) -> dict[str, str]:
    """Every setting as the environment variable a worker process reads."""

    def as_text(value: object) -> str:
        if isinstance(value, tuple):
            return ",".join(value)
        if isinstance(value, dict):
            return json.dumps(value)
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    return {
        ENV_PREFIX + name.upper(): as_text(value)
        for name, value in settings.model_dump().items()
        if name != "cache_dir"
    }


#: pytest-xdist's test processes (1 without it).
TEST_PROCESS_COUNT = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
#: A test process's share of the cores, for its own forwards (engine, model and batching
#: tests) and its workers', as deploy/k8s/ sizes each process's to its share of a pod's.
#: Left at every core, the two test processes' workers ran their forwards side by side on
#: two threads each, and spent 4.6 s a forward where one thread alone takes 3.3 s. Set
#: before anything imports torch, which reads it once.
TEST_PROCESS_THREADS = thread_env(threads_per_process(TEST_PROCESS_COUNT))
os.environ.update(TEST_PROCESS_THREADS)


def worker_env(settings: Settings, extra_env: dict[str, str]) -> dict[str, str]:
    """A test worker's environment: the settings, and this test process's threads."""
    return {
        **os.environ,
        **settings_env(settings),
        **TEST_PROCESS_THREADS,
        **extra_env,
        "PYTHONPATH": str(REPO),
    }


def fresh_interpreter_json(script: str, *args: str, timeout: float | None = None) -> Any:
    """What `python -c script *args` prints on its last line, as JSON: run in a fresh
    interpreter at the repository's root, so that nothing this process imported counts."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def start_worker_process(
    command: list[str], log: Path, env: dict[str, str], **popen: Any
) -> subprocess.Popen[bytes]:
    """One of the suite's worker processes, its output in `log`, stopped with its test
    process (a crash included)."""
    return subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        preexec_fn=stops_with_the_test_process,
        **popen,
    )


class WorkerProcesses:
    """The workers of cli.stack (gpu solo or batching threads, cpu prefork, webhooks threads)
    on test settings."""

    def __init__(self, settings: Settings, log_dir: Path, extra_env: dict[str, str]) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.env = worker_env(settings, extra_env)
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        from cli.stack import worker_commands

        node_prefix = f"test-{uuid.uuid4().hex[:6]}-"
        commands = worker_commands(node_prefix, batch_max=self.settings.batch_max)
        for name, command in commands.items():
            self.processes.append(
                start_worker_process(command, self.log_dir / f"{name}.log", self.env)
            )

    def wait_ready(self, client: redis.Redis) -> None:
        from shared.workers import live_workers, ready_queues

        deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if {"gpu", "cpu", "webhooks"} <= ready_queues(live_workers(client)):
                return
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"a worker exited early; see {self.log_dir}")
            time.sleep(0.5)
        raise TimeoutError(
            f"workers not ready after {WORKER_READY_TIMEOUT_S} s; see {self.log_dir}"
        )

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


@contextmanager
def running_workers(
    settings: Settings, log_dir: Path, extra_env: dict[str, str]
) -> Iterator[WorkerProcesses]:
    client = redis.Redis.from_url(settings.redis_url)
    client.flushdb()
    processes = WorkerProcesses(settings, log_dir, extra_env)
    processes.start()
    try:
        processes.wait_ready(client)
        yield processes
    finally:
        processes.stop()
        client.flushdb()


@pytest.fixture(scope="session")
def workers(
    e2e_settings: Settings, crash_marker: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcesses]:
    with running_workers(
        e2e_settings,
        tmp_path_factory.mktemp("worker-logs"),
        {"CUTFX_TEST_CRASH_MARKER": str(crash_marker)},
    ) as processes:
        yield processes


@pytest.fixture
def e2e_app(workers: WorkerProcesses, e2e_settings: Settings):
    from api import create_app

    return create_app({"TESTING": True, "CUTFX_SETTINGS": e2e_settings})


@pytest.fixture
def e2e_client(e2e_app):
    return e2e_app.test_client()


class LiveServer:
    """The API on a real loopback port, for clients that speak HTTP (browsers, SSE readers)."""

    def __init__(self, app) -> None:
        from werkzeug.serving import make_server

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()


@pytest.fixture
def e2e_server(e2e_app) -> Iterator[LiveServer]:
    with LiveServer(e2e_app) as server:
        yield server


@pytest.fixture
def live_server(app) -> Iterator[LiveServer]:
    with LiveServer(app) as server:
        yield server


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Screenshots and other artifacts; CUTFX_TEST_ARTIFACTS keeps them in a known place."""
    chosen = os.environ.get("CUTFX_TEST_ARTIFACTS")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def gcs_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    from cli.stack import free_port
    from tests.gcs import emulator, write_service_account_key

    key = write_service_account_key(tmp_path_factory.mktemp("gcs") / "service-account.json")
    with emulator(free_port(preferred_port(9023)), key) as environment:
        yield environment


#: The slowest modules, slowest first (their times in two test processes on a 2-core AVX2
#: EPYC: 194 s down to 17 s), handed out first so that the test processes finish
#: together rather than one waiting on the last. Mostly waiting (restarts, failovers,
#: visibility timeouts), forwards, and base-mode forwards in eager torch. scripts/test.sh
#: passes --no-loadscope-reorder: pytest-xdist otherwise hands out the modules with the
#: most tests first, and the one-test modules of a minute or more came last.
SLOW_MODULES = (
    "tests/worker/test_faults.py",
    "tests/worker/test_engines.py",
    "tests/worker/test_batching.py",
    "tests/worker/test_corpus.py",
    "tests/worker/test_model.py",
    "tests/worker/test_checks.py",
    "tests/worker/test_preview.py",
    "tests/worker/test_failover.py",
    "tests/test_watched.py",
    "tests/api/test_image_url.py",
    "tests/worker/test_lanes.py",
    "tests/api/test_page_browser.py",
    "tests/worker/test_pipeline.py",
    "tests/shared/test_redis_cluster.py",
    "tests/worker/test_full_size.py",
    "tests/api/test_cancel.py",
    "tests/cli/test_batch.py",
    "tests/worker/test_cache.py",
    "tests/worker/test_gcs_pipeline.py",
    "tests/worker/test_output_options.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = Path(str(item.path)).relative_to(REPO).as_posix()
        return SLOW_MODULES.index(path) if path in SLOW_MODULES else len(SLOW_MODULES)

    items.sort(key=rank)


#: Packages that compile code when imported: `import pymatting` compiles every numba kernel
#: it has, about 45 CPU-seconds on a fresh install (its cache is the installed package's).
COMPILING_AT_IMPORT = ("numba", "pymatting")
#: Which of them collecting the suite imported, in this test process.
COMPILED_AT_COLLECTION = pytest.StashKey[list[str]]()


def pytest_collection_finish(session: pytest.Session) -> None:
    session.config.stash[COMPILED_AT_COLLECTION] = [
        name for name in COMPILING_AT_IMPORT if name in sys.modules
    ]
