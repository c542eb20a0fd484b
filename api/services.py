"""The API's connections, made once per app and reached through `services()`."""

from __future__ import annotations

from dataclasses import dataclass, fields

from celery import Celery
from flask import Flask, current_app

from api.idempotency import IdempotencyStore
from api.images import DecodePool
from api.tokens import TokenQuota
from shared.context import ServiceContext, connect_context
from shared.queues import celery_config
from shared.settings import Settings
from shared.signing import Purpose, derive_key

EXTENSION_NAME = "cutfx"
#: How long a request waits for a free Redis connection before it is a 503.
POOL_WAIT_S = 5
#: Longer than the longest blocking read (a 30 s long-poll, a 60 s keep-alive wait), so a
#: connection whose peer vanished is dropped instead of held for ever.
REDIS_SOCKET_TIMEOUT_S = 75
REDIS_CONNECT_TIMEOUT_S = 5
CONNECTION_OPTIONS = {
    "socket_timeout": REDIS_SOCKET_TIMEOUT_S,
    "socket_connect_timeout": REDIS_CONNECT_TIMEOUT_S,
    "health_check_interval": 30,
    "decode_responses": True,
}
#: The API's cache lookups are counted as made at submit.
CACHE_LOOKUPS_FROM = "submit"


@dataclass(frozen=True)
class Services(ServiceContext):
    """The shared service context plus what only the API uses."""

    celery: Celery
    idempotency: IdempotencyStore
    decoder: DecodePool
    token_quota: TokenQuota


def celery_init_app(app: Flask, settings: Settings) -> Celery:
    """A producer-only Celery app: the API sends tasks by name and never imports the worker."""
    celery = Celery(app.name)
    celery.conf.update(celery_config(settings))
    celery.set_default()
    app.extensions["celery"] = celery
    return celery


def init_services(app: Flask, settings: Settings) -> Services:
    # A blocking pool: each open event stream holds one connection while it waits on Redis.
    pool = {"max_connections": settings.redis_max_connections, "pool_wait_s": POOL_WAIT_S}
    context = connect_context(settings, CACHE_LOOKUPS_FROM, pool, **CONNECTION_OPTIONS)
    built = Services(
        **{item.name: getattr(context, item.name) for item in fields(context)},
        celery=celery_init_app(app, settings),
        idempotency=IdempotencyStore(
            context.redis,
            settings.idempotency_ttl_s,
            derive_key(settings.signing_key, Purpose.IDEMPOTENCY),
        ),
        decoder=DecodePool(settings.decode_concurrency),
        token_quota=TokenQuota(context.redis),
    )
    app.extensions[EXTENSION_NAME] = built
    return built


def services() -> Services:
    found: Services = current_app.extensions[EXTENSION_NAME]
    return found
