"""The API's connections, made once per app and reached through `services()`."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from celery import Celery
from flask import Flask, current_app

from shared.cache import ResultCache
from shared.idempotency import IdempotencyStore
from shared.job_summary import summarise_finished_jobs
from shared.jobstore import JobStore
from shared.metrics import Metrics
from shared.queues import celery_config
from shared.settings import Settings
from shared.storage import Storage, storage_from_settings

EXTENSION_NAME = "cutfx"
#: How long a request waits for a free Redis connection before it is a 503.
POOL_WAIT_S = 5


@dataclass(frozen=True)
class Services:
    settings: Settings
    redis: redis.Redis
    storage: Storage
    jobs: JobStore
    celery: Celery
    cache: ResultCache
    idempotency: IdempotencyStore
    metrics: Metrics


def celery_init_app(app: Flask, settings: Settings) -> Celery:
    """A producer-only Celery app: the API sends tasks by name and never imports the worker."""
    celery = Celery(app.name)
    celery.conf.update(celery_config(settings))
    celery.set_default()
    app.extensions["celery"] = celery
    return celery


def init_services(app: Flask, settings: Settings) -> Services:
    # Each open event stream holds one connection while it waits on Redis.
    pool = redis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=POOL_WAIT_S,
        health_check_interval=30,
    )
    client = redis.Redis(connection_pool=pool)
    storage = storage_from_settings(settings)
    metrics = Metrics(client)
    built = Services(
        settings=settings,
        redis=client,
        storage=storage,
        jobs=summarise_finished_jobs(JobStore(client, settings.result_ttl_s), metrics),
        metrics=metrics,
        celery=celery_init_app(app, settings),
        cache=ResultCache(client, storage, settings.result_ttl_s, where="submit"),
        idempotency=IdempotencyStore(client, settings.idempotency_ttl_s),
    )
    app.extensions[EXTENSION_NAME] = built
    return built


def services() -> Services:
    found: Services = current_app.extensions[EXTENSION_NAME]
    return found
