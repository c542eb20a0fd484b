"""GET /healthz (the process is alive) and GET /readyz (it can take work)."""

from __future__ import annotations

from typing import Any

import redis
from flask import Blueprint

from api.services import services
from shared.errors import ServiceNotReady
from shared.queues import QUEUE_CPU, QUEUE_GPU
from shared.workers import live_workers, ready_queues

blueprint = Blueprint("health", __name__)

REQUIRED_QUEUES = (QUEUE_GPU, QUEUE_CPU)
WARMUP_REQUESTS_KEY = "cutfx:warmup:requests"


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

    The request is counted in Redis (WARMUP_REQUESTS_KEY), so an autoscaler that
    keeps GPU workers at zero can start one before the photo arrives.
    """
    svc = services()
    svc.redis.incr(WARMUP_REQUESTS_KEY)
    workers = live_workers(svc.redis)
    gpu_ready = QUEUE_GPU in ready_queues(workers)
    return {
        "ready": gpu_ready,
        "gpu_workers": sum(QUEUE_GPU in w.queues and w.ready for w in workers),
        "message": "a GPU worker is ready" if gpu_ready else "no GPU worker is ready: scale one up",
    }
