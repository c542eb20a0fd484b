"""create_app: settings, the services it connects (Redis, Celery, storage), blueprints,
limits, headers and error handlers."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from celery import Celery
from flask import Flask

from api import account, errors, files, health, jobs, keep, middleware, openapi
from api.idempotency import IdempotencyStore
from api.middleware import (
    API_KEYS_EXTENSION,
    CLIENT_TOKENS_EXTENSION,
    SERVICES_EXTENSION,
    ApiKeys,
    Services,
    StreamSlots,
    init_cors,
    init_limits,
    register_security_headers,
    require_api_key,
)
from api.tokens import TokenCodec, TokenQuota
from api.upload import DecodePool
from effects.registry import load_plugins
from shared.context import connect_context
from shared.queues import celery_config
from shared.settings import Settings
from shared.signing import Purpose, derive_key
from shared.telemetry import configure_logging, configure_tracing

logger = logging.getLogger(__name__)

#: Room for the multipart envelope around an upload of the largest allowed size.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
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


def create_app(
    test_config: Mapping[str, Any] | None = None, settings: Settings | None = None
) -> Flask:
    """The API; `settings` as read by its entry point (`cutfx serve`), else from
    `test_config["CUTFX_SETTINGS"]`, else from the environment."""
    app = Flask(__name__)
    settings = settings or (test_config or {}).get("CUTFX_SETTINGS") or Settings.from_env()
    settings.require_safe_start("API")
    app.config.from_mapping(
        MAX_CONTENT_LENGTH=settings.max_upload_bytes + MULTIPART_OVERHEAD_BYTES,
        JSON_SORT_KEYS=False,
    )
    if test_config:
        app.config.from_mapping(test_config)
    if not app.testing:
        configure_logging("api")
    configure_tracing("api", settings, (test_config or {}).get("CUTFX_SPAN_PROCESSOR"))
    load_plugins(settings.effect_plugins)
    init_services(app, settings)
    app.extensions[API_KEYS_EXTENSION] = ApiKeys.from_keys(settings.api_keys)
    app.extensions[CLIENT_TOKENS_EXTENSION] = TokenCodec(settings.signing_key)
    middleware.register(app)
    app.before_request(require_api_key)
    blueprints = (
        jobs.blueprint,
        jobs.events_blueprint,
        keep.blueprint,
        files.blueprint,
        health.blueprint,
        openapi.blueprint,
        files.page_blueprint,
        account.webhooks_blueprint,
        health.metrics_blueprint,
        account.client_tokens_blueprint,
        account.usage_blueprint,
    )
    for blueprint in blueprints:
        app.register_blueprint(blueprint)
    init_cors(app, settings)
    init_limits(app, settings)
    register_security_headers(app)
    errors.register(app)
    if settings.development:
        logger.warning("CUTFX_ENV=development: keys and limits are not enforced as in production")
    return app


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
        stream_slots=StreamSlots(context.redis, settings.max_streams_per_key),
    )
    app.extensions[SERVICES_EXTENSION] = built
    return built
