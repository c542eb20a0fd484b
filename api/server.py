"""The API server: gunicorn with gevent workers, configured from the settings (`cutfx serve`).

gevent workers hold thousands of open Server-Sent-Event streams on a few
processes, each stream a cheap greenlet waiting on Redis, so long-lived
subscribers never starve short requests (a sync or gthread worker would
give each stream a whole thread or process).

The settings are read once, by the command line, and handed to every worker's app:
no process of the API reads the environment again.
"""

from __future__ import annotations

import multiprocessing
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from shared.settings import Settings

WORKER_CLASS = "gevent"
#: Processes when CUTFX_API_WORKERS is 0: one per core, at most this many.
MAX_DEFAULT_WORKERS = 4
# Streams stay open far longer than any request; gevent workers heartbeat on their own.
TIMEOUT_S = 120
GRACEFUL_TIMEOUT_S = 30
KEEPALIVE_S = 5
ACCESS_LOG_FORMAT = '{"route": "%(U)s", "method": "%(m)s", "status": %(s)s, "ms": %(M)s}'


def server_options(settings: Settings, bind: str = "", workers: int = 0) -> dict[str, Any]:
    """gunicorn's settings for the API; `bind` and `workers` override the settings'."""
    default_workers = min(MAX_DEFAULT_WORKERS, multiprocessing.cpu_count())
    return {
        "bind": bind or settings.bind,
        "worker_class": WORKER_CLASS,
        "workers": workers or settings.api_workers or default_workers,
        "worker_connections": settings.api_connections,
        "timeout": TIMEOUT_S,
        "graceful_timeout": GRACEFUL_TIMEOUT_S,
        "keepalive": KEEPALIVE_S,
        "accesslog": "-",
        "access_log_format": ACCESS_LOG_FORMAT,
    }


class ApiServer(BaseApplication):  # type: ignore[misc]
    """gunicorn running `create_app` with settings already read."""

    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for name, value in self.options.items():
            self.cfg.set(name, value)

    def load(self) -> Flask:
        # Imported in each worker, after gevent has patched it, not in the arbiter.
        from api.app import create_app

        return create_app(settings=self.settings)


def serve(settings: Settings, bind: str = "", workers: int = 0) -> None:
    """Run the API until gunicorn is told to stop."""
    settings.require_safe_start("API")
    ApiServer(settings, server_options(settings, bind, workers)).run()
