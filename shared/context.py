"""The service context: what the API and the workers talk to, built by one function."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis import Redis

from shared.jobs.plan import ResultCache, cache_scope
from shared.jobs.store import JobStore
from shared.redis_location import redis_client
from shared.settings import CheckThresholds, Settings, check_thresholds
from shared.storage import Storage, kept_storage_from_settings, storage_from_settings
from shared.telemetry import FinishedJobReporter, Metrics, Usage, count_storage_error


@dataclass(frozen=True)
class ServiceContext:
    settings: Settings
    #: The job store's Redis: jobs, events, cache index, heartbeats, metrics.
    redis: Redis
    #: The broker's Redis (the same client unless CUTFX_STORE_URL is set): queue lengths
    #: and the unacked index live there.
    broker: Redis
    storage: Storage
    #: Where kept results go (the same storage locally, under its kept prefix).
    kept_storage: Storage
    jobs: JobStore
    cache: ResultCache
    metrics: Metrics
    #: What each API key used, per day.
    usage: Usage
    #: What the checks of a cutout judge against.
    check_thresholds: CheckThresholds


def connect_context(
    settings: Settings,
    cache_lookups_from: str,
    store_pool: Mapping[str, Any] | None = None,
    **options: Any,
) -> ServiceContext:
    """The context on clients of its own: the job store's Redis with `options` (and
    `store_pool`: redis_client's pool bounds), and the broker's, the same client unless
    CUTFX_STORE_URL puts the job store elsewhere."""
    store = redis_client(settings.job_store_url, **(store_pool or {}), **options)
    broker = redis_client(settings.redis_url, **options) if settings.store_url else store
    return build_context(settings, store, cache_lookups_from, broker)


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
    metrics = Metrics(client)
    usage = Usage(client)
    on_error = count_storage_error(metrics)
    storage = storage_from_settings(settings, on_error)
    return ServiceContext(
        settings=settings,
        redis=client,
        broker=client if broker is None else broker,
        storage=storage,
        kept_storage=kept_storage_from_settings(settings, storage, on_error),
        jobs=JobStore(
            client, settings.result_ttl_s, on_job_finished=FinishedJobReporter(metrics, usage)
        ),
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
        usage=usage,
        check_thresholds=check_thresholds(settings),
    )
