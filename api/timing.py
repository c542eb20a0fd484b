"""Per-request timings: the Server-Timing header, and request metrics shared through Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from flask import Flask, Response, g, request

from api.services import services
from shared.metrics import REQUEST_SECONDS, REQUESTS

UNMATCHED_ROUTE = "unmatched"
#: Any other method string is counted as OTHER_METHOD, so a client cannot mint series.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Time a step of this request; it appears in the response's Server-Timing header."""
    started = time.perf_counter()
    try:
        yield
    finally:
        g.setdefault("stages", []).append((name, time.perf_counter() - started))


def _start() -> None:
    g.request_started = time.perf_counter()


def _finish(response: Response) -> Response:
    total = time.perf_counter() - g.get("request_started", time.perf_counter())
    stages = [*g.get("stages", []), ("total", total)]
    response.headers["Server-Timing"] = ", ".join(
        f"{name};dur={s * 1000:.1f}" for name, s in stages
    )
    route = request.url_rule.rule if request.url_rule is not None else UNMATCHED_ROUTE
    method = request.method if request.method in KNOWN_METHODS else OTHER_METHOD
    labels = {"route": route, "method": method, "status": str(response.status_code)}
    try:
        metrics = services().metrics
        metrics.increment(REQUESTS, labels)
        metrics.observe(REQUEST_SECONDS, total, {"route": route})
    except redis.RedisError:
        pass  # metrics must never fail a request; the request itself reports Redis trouble
    return response


def register(app: Flask) -> None:
    app.before_request(_start)
    app.after_request(_finish)
