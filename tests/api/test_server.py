"""`cutfx serve`: gunicorn's settings come from the service's, and its workers' app is the
factory's, built from settings read once."""

from __future__ import annotations

import subprocess
import sys
import time
from multiprocessing import cpu_count

import requests

from api.server import MAX_DEFAULT_WORKERS, WORKER_CLASS, ApiServer, server_options
from cli.stack import free_port
from tests.conftest import REPO, preferred_port, settings_env


def test_the_options_follow_the_settings(settings):
    chosen = settings.with_overrides(bind="127.0.0.1:9999", api_workers=3, api_connections=77)
    options = server_options(chosen)
    assert options["bind"] == "127.0.0.1:9999"
    assert options["workers"] == 3
    assert options["worker_connections"] == 77
    assert options["worker_class"] == WORKER_CLASS == "gevent"


def test_the_command_line_overrides_bind_and_workers(settings):
    options = server_options(settings, bind="127.0.0.1:1234", workers=2)
    assert (options["bind"], options["workers"]) == ("127.0.0.1:1234", 2)
    assert server_options(settings.with_overrides(api_workers=0))["workers"] == min(
        MAX_DEFAULT_WORKERS, cpu_count()
    )


def test_each_worker_loads_the_factorys_app_with_the_settings_given(settings):
    app = ApiServer(settings, server_options(settings)).load()
    assert app.extensions["cutfx"].settings is settings
    assert "/healthz" in {rule.rule for rule in app.url_map.iter_rules()}


def test_cutfx_serve_answers_on_its_port(settings, tmp_path):
    port = free_port(preferred_port(8700))
    env = {**settings_env(settings), "PATH": f"{REPO / '.venv' / 'bin'}:/usr/bin:/bin"}
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "cli", "serve", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                # A connection the listening socket took waits for the worker's boot, which
                # on a loaded machine takes seconds: only the connection times out fast.
                answer = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=(2, 30))
                break
            except requests.ConnectionError:
                assert server.poll() is None, (tmp_path / "serve.log").read_text()
                assert time.monotonic() < deadline, "cutfx serve did not answer in 60 s"
                time.sleep(0.2)
        assert answer.status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_production_start_without_keys_is_refused(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "CUTFX_ENV": "production"}
    finished = subprocess.run(
        [sys.executable, "-m", "cli", "serve", "--bind", "127.0.0.1:0"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode != 0
    assert "CUTFX_API_KEYS" in finished.stderr
