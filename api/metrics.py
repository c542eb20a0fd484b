"""GET /metrics: Prometheus text, the same from every API process (the figures live in Redis)."""

from __future__ import annotations

import hashlib
import hmac

import redis
from flask import Blueprint, Response, request

from api.services import services
from shared.errors import Unauthorized
from shared.metrics import ALL_METRICS, gauge, render
from shared.queues import PRIORITY_STEPS, QUEUE_CPU, QUEUE_GPU, QUEUE_WEBHOOKS
from shared.workers import live_workers

blueprint = Blueprint("metrics", __name__)

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
QUEUES = (QUEUE_GPU, QUEUE_CPU, QUEUE_WEBHOOKS)


def queue_depths(client: redis.Redis) -> dict[str, float]:
    """Messages waiting per queue; Celery keeps each priority step in a list of its own."""
    depths: dict[str, float] = {}
    for queue in QUEUES:
        lists = [queue, *(f"{queue}:{step}" for step in PRIORITY_STEPS if step)]
        with client.pipeline(transaction=False) as pipe:
            for name in lists:
                pipe.llen(name)
            depths[queue] = float(sum(pipe.execute()))
    return depths


def ready_workers(client: redis.Redis) -> dict[str, float]:
    workers = live_workers(client)
    return {queue: float(sum(queue in w.queues and w.ready for w in workers)) for queue in QUEUES}


def require_metrics_token() -> None:
    """/metrics has its own token (CUTFX_METRICS_TOKEN); without one it is open in
    development only."""
    settings = services().settings
    if not settings.metrics_token:
        if settings.development:
            return
        raise Unauthorized(
            "/metrics needs CUTFX_METRICS_TOKEN to be set and sent as a bearer token"
        )
    header = request.headers.get("Authorization", "")
    presented = header[7:].strip() if header.lower().startswith("bearer ") else ""
    expected = hashlib.sha256(settings.metrics_token.encode()).digest()
    given = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
    if not hmac.compare_digest(expected, given):
        raise Unauthorized("/metrics needs its bearer token")


@blueprint.get("/metrics")
def metrics() -> Response:
    require_metrics_token()
    svc = services()
    gauges = [
        gauge("cutfx_queue_depth", "Tasks waiting per queue", queue_depths(svc.broker), "queue"),
        gauge("cutfx_ready_workers", "Ready workers per queue", ready_workers(svc.redis), "queue"),
    ]
    return Response(render(svc.redis, ALL_METRICS, gauges), mimetype=PROMETHEUS_TEXT)
