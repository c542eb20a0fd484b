"""The service context: what the API and the workers talk to, built by one function."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from shared.cache import ResultCache, cache_scope
from shared.jobs.report import FinishedJobReporter
from shared.jobs.store import JobStore
from shared.metrics import Metrics
from shared.settings import Settings
from shared.storage import Storage, storage_from_settings


@dataclass(frozen=True)
class ServiceContext:
    settings: Settings
    redis: redis.Redis
    storage: Storage
    jobs: JobStore
    cache: ResultCache
    metrics: Metrics


def build_context(
    settings: Settings, client: redis.Redis, cache_lookups_from: str
) -> ServiceContext:
    """Everything on one Redis client, which must decode replies (decode_responses=True).

    `cache_lookups_from` labels this process's cache lookups in the metrics
    ("submit" for the API, "worker" for workers).
    """
    storage = storage_from_settings(settings)
    metrics = Metrics(client)
    return ServiceContext(
        settings=settings,
        redis=client,
        storage=storage,
        jobs=JobStore(client, settings.result_ttl_s, on_job_finished=FinishedJobReporter(metrics)),
        # Unscoped, the cache is the one of requests without a key (development);
        # work for a job uses cache.scoped(...) with its owner's scope.
        cache=ResultCache(
            client,
            storage,
            metrics,
            settings.result_ttl_s,
            cache_lookups_from,
            scope=cache_scope(settings.cache_scope, owner=""),
        ),
        metrics=metrics,
    )
