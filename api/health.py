"""GET /healthz (the process is alive) and GET /readyz (it can take work)."""

from __future__ import annotations

import time
from typing import Any

import redis
from flask import Blueprint

from api.services import services
from shared.errors import ServiceNotReady
from shared.queues import QUEUE_CPU, QUEUE_GPU
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
