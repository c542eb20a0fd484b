"""The service context: what the API and the workers talk to, built by one function."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis import Redis

from shared.cache import ResultCache, cache_scope
from shared.jobs.report import FinishedJobReporter
from shared.jobs.store import JobStore
from shared.metrics import Metrics
from shared.redis_location import redis_client
from shared.settings import Settings
from shared.storage import Storage, storage_from_settings


@dataclass(frozen=True)
class ServiceContext:
    settings: Settings
    #: The job store's Redis: jobs, events, cache index, heartbeats, metrics.
    redis: Redis
    #: The broker's Redis (the same client unless CUTFX_STORE_URL is set): queue lengths
    #: and the unacked index live there.
    broker: Redis
    storage: Storage
    jobs: JobStore
    cache: ResultCache
    metrics: Metrics


def broker_client(settings: Settings, store: Redis, **options: Any) -> Redis:
    """The broker's Redis: `store` itself unless the job store lives elsewhere."""
    if not settings.store_url:
        return store
    return redis_client(settings.redis_url, **options)


def build_context(
    settings: Settings,
    client: Redis,
    cache_lookups_from: str,
    broker: Redis | None = None,
) -> ServiceContext:
    """Everything on the job store's client, which must decode replies
    (decode_responses=True); `broker` defaults to it.

    `cache_lookups_from` labels this process's cache lookups in the metrics
    ("submit" for the API, "worker" for workers).
    """
    storage = storage_from_settings(settings)
    metrics = Metrics(client)
    return ServiceContext(
        settings=settings,
        redis=client,
        broker=client if broker is None else broker,
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
