"""What a worker process talks to, made once per process (after any fork)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import redis

from shared.cache import ResultCache
from shared.job_summary import summarise_finished_jobs
from shared.jobstore import JobStore
from shared.metrics import Metrics
from shared.settings import Settings
from shared.storage import Storage, storage_from_settings


@dataclass(frozen=True)
class WorkerContext:
    settings: Settings
    redis: redis.Redis
    storage: Storage
    jobs: JobStore
    cache: ResultCache
    metrics: Metrics


@lru_cache(maxsize=1)
def get_context() -> WorkerContext:
    settings = Settings.from_env()
    client = redis.Redis.from_url(settings.redis_url)
    storage = storage_from_settings(settings)
    metrics = Metrics(client)
    return WorkerContext(
        settings=settings,
        redis=client,
        storage=storage,
        jobs=summarise_finished_jobs(JobStore(client, settings.result_ttl_s), metrics),
        cache=ResultCache(client, storage, settings.result_ttl_s, where="worker"),
        metrics=metrics,
    )
