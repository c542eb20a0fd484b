"""How the service is doing: GET /healthz (alive), GET /readyz (it can take work),
POST /v1/warmup, and GET /metrics (Prometheus, behind its token)."""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

import redis
from flask import Blueprint, Response, request

from api.middleware import services
from shared.errors import ServiceNotReady, Unauthorized
from shared.queues import PRIORITY_STEPS, QUEUE_CPU, QUEUE_GPU, QUEUE_WEBHOOKS
from shared.telemetry import ALL_METRICS, gauge, render
from shared.workers import live_workers, ready_queues

blueprint = Blueprint("health", __name__)

REQUIRED_QUEUES = (QUEUE_GPU, QUEUE_CPU)
#: A list on the broker's Redis that holds one entry per recent warm-up request and
#: vanishes WARMUP_SIGNAL_TTL_S after the last: an autoscaler that reads list lengths
#: (KEDA's redis scaler) wakes a GPU worker on it as on the gpu queue itself.
WARMUP_SIGNAL_KEY = "cutfx:warmup"
WARMUP_SIGNAL_TTL_S = 120
WARMUP_SIGNAL_MAX_LEN = 100


@blueprint.get("/healthz")
def healthz() -> dict[str, Any]:
    return {"status": "ok"}


def readiness() -> dict[str, Any]:
    """Redis answers and each queue has a ready worker; raises ServiceNotReady otherwise."""
    svc = services()
    try:
        workers = live_workers(svc.redis)
        svc.broker.ping()
    except redis.RedisError as exc:
        raise ServiceNotReady(f"Redis does not answer: {type(exc).__name__}") from None
    served = ready_queues(workers)
    missing = [queue for queue in REQUIRED_QUEUES if queue not in served]
    if missing:
        raise ServiceNotReady(f"no ready worker serves the {', '.join(missing)} queue")
    return {
        "status": "ready",
        "queues": {
            queue: sum(queue in w.queues and w.ready for w in workers) for queue in REQUIRED_QUEUES
        },
    }


@blueprint.get("/readyz")
def readyz() -> dict[str, Any]:
    return readiness()


@blueprint.post("/v1/warmup")
def warmup() -> dict[str, Any]:
    """A page announces a coming upload; say whether a GPU worker is ready for it.

    The request leaves an entry in WARMUP_SIGNAL_KEY, so an autoscaler that keeps GPU
    workers at zero can start one before the photo arrives.
    """
    svc = services()
    with svc.broker.pipeline(transaction=True) as pipe:
        pipe.lpush(WARMUP_SIGNAL_KEY, time.time())
        pipe.ltrim(WARMUP_SIGNAL_KEY, 0, WARMUP_SIGNAL_MAX_LEN - 1)
        pipe.expire(WARMUP_SIGNAL_KEY, WARMUP_SIGNAL_TTL_S)
        pipe.execute()
    workers = live_workers(svc.redis)
    gpu_ready = QUEUE_GPU in ready_queues(workers)
    return {
        "ready": gpu_ready,
        "gpu_workers": sum(QUEUE_GPU in w.queues and w.ready for w in workers),
        "message": "a GPU worker is ready" if gpu_ready else "no GPU worker is ready: scale one up",
    }


# GET /metrics: Prometheus text, the same from every API process (the figures live in Redis).

metrics_blueprint = Blueprint("metrics", __name__)

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


@metrics_blueprint.get("/metrics")
def metrics() -> Response:
    require_metrics_token()
    svc = services()
    gauges = [
        gauge("cutfx_queue_depth", "Tasks waiting per queue", queue_depths(svc.broker), "queue"),
        gauge("cutfx_ready_workers", "Ready workers per queue", ready_workers(svc.redis), "queue"),
    ]
    return Response(render(svc.redis, ALL_METRICS, gauges), mimetype=PROMETHEUS_TEXT)
