"""How the service is doing: GET /healthz (alive), GET /readyz (it can take work),
POST /v1/warmup, and GET /metrics (Prometheus, behind its token)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import redis
from flask import Blueprint, Response, current_app, request

from api.middleware import API_KEYS_EXTENSION, ApiKeys, services
from shared.errors import ServiceNotReady, Unauthorized
from shared.queues import (
    PRIORITY_STEPS,
    QUEUE_CPU,
    QUEUE_GPU,
    QUEUE_WEBHOOKS,
    QUEUED_AT_HEADER,
)
from shared.telemetry import ALL_METRICS, gauge, render, usage_families
from shared.workers import live_workers, ready_queues

blueprint = Blueprint("health", __name__)

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
    required = svc.settings.ready_queues
    missing = [queue for queue in required if queue not in served]
    if missing:
        raise ServiceNotReady(f"no ready worker serves the {', '.join(missing)} queue")
    return {
        "status": "ready",
        "queues": {
            queue: sum(queue in w.queues and w.ready for w in workers) for queue in required
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


def priority_lists(queue: str) -> list[str]:
    """Celery keeps each priority step of a queue in a Redis list of its own."""
    return [queue, *(f"{queue}:{step}" for step in PRIORITY_STEPS if step)]


def queue_depths(client: redis.Redis) -> dict[str, float]:
    """Messages waiting per queue."""
    depths: dict[str, float] = {}
    for queue in QUEUES:
        with client.pipeline(transaction=False) as pipe:
            for name in priority_lists(queue):
                pipe.llen(name)
            depths[queue] = float(sum(pipe.execute()))
    return depths


def oldest_waiting_ages(client: redis.Redis, at: float) -> dict[str, float]:
    """Seconds the oldest message of each queue has waited (0 when it is empty). Kombu
    pushes on the left and pops on the right, so each list's oldest is its last item."""
    ages: dict[str, float] = {}
    for queue in QUEUES:
        with client.pipeline(transaction=False) as pipe:
            for name in priority_lists(queue):
                pipe.lindex(name, -1)
            oldest = [_queued_at(raw) for raw in pipe.execute() if raw is not None]
        known = [queued_at for queued_at in oldest if queued_at is not None]
        ages[queue] = max(0.0, at - min(known)) if known else 0.0
    return ages


def _queued_at(raw: str | bytes) -> float | None:
    """When a task message was queued, from the header cutfx stamps on it (None for a
    message without one)."""
    try:
        value = json.loads(raw)["headers"][QUEUED_AT_HEADER]
    except (ValueError, KeyError, TypeError):
        return None
    return float(value) if isinstance(value, (int, float)) else None


def redis_memory(roles: dict[str, redis.Redis]) -> tuple[dict[str, float], dict[str, float]]:
    """Bytes used and the maxmemory limit (0: none) of each Redis the service uses."""
    used: dict[str, float] = {}
    limit: dict[str, float] = {}
    for role, client in roles.items():
        info: Any = client.info("memory")
        used[role] = float(info.get("used_memory", 0))
        limit[role] = float(info.get("maxmemory", 0))
    return used, limit


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
    roles = {"store": svc.redis}
    if svc.broker is not svc.redis:
        roles["broker"] = svc.broker
    used, limit = redis_memory(roles)
    ages = oldest_waiting_ages(svc.broker, time.time())
    gauges = [
        gauge("cutfx_queue_depth", "Tasks waiting per queue", queue_depths(svc.broker), "queue"),
        gauge("cutfx_queue_oldest_age_seconds", "Age of each queue's oldest task", ages, "queue"),
        gauge("cutfx_ready_workers", "Ready workers per queue", ready_workers(svc.redis), "queue"),
        gauge("cutfx_redis_memory_used_bytes", "Memory used by each Redis", used, "role"),
        gauge("cutfx_redis_maxmemory_bytes", "Each Redis's maxmemory (0: none)", limit, "role"),
    ]
    api_keys: ApiKeys = current_app.extensions[API_KEYS_EXTENSION]
    usage = usage_families(svc.usage, api_keys.key_ids)
    return Response(render(svc.redis, ALL_METRICS, [*gauges, *usage]), mimetype=PROMETHEUS_TEXT)
