"""Worker heartbeats in Redis: who serves which queue, with which model, ready or not."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import redis

HEARTBEAT_PREFIX = "cutfx:worker:"
HEARTBEAT_INTERVAL_S = 5
#: A worker that missed three beats is gone.
HEARTBEAT_TTL_S = 3 * HEARTBEAT_INTERVAL_S


@dataclass(frozen=True)
class WorkerStatus:
    name: str
    queues: tuple[str, ...]
    ready: bool
    pid: int
    started_at: float
    model_id: str | None = None
    device: str | None = None
    precision: str | None = None
    engine: str | None = None
    random_weights: bool | None = None
    ready_after_s: float | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def publish(client: redis.Redis, status: WorkerStatus) -> None:
    client.set(HEARTBEAT_PREFIX + status.name, status.to_json(), ex=HEARTBEAT_TTL_S)


def withdraw(client: redis.Redis, name: str) -> None:
    client.delete(HEARTBEAT_PREFIX + name)


def live_workers(client: redis.Redis) -> list[WorkerStatus]:
    keys = list(client.scan_iter(match=HEARTBEAT_PREFIX + "*", count=100))
    # One GET per key rather than MGET: on a Redis Cluster the keys lie in many slots.
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.get(key)
        replies = pipe.execute() if keys else []
    workers = []
    for raw in replies:
        if raw is None:
            continue
        data = json.loads(raw)
        data["queues"] = tuple(data["queues"])
        workers.append(WorkerStatus(**data))
    return workers


def ready_queues(workers: list[WorkerStatus]) -> set[str]:
    return {queue for worker in workers if worker.ready for queue in worker.queues}
