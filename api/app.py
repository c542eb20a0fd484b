"""create_app: settings, services, blueprints, limits, headers and error handlers."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask

from api import auth, errors, files, health, jobs, middleware, openapi
from api.auth import EXTENSION_NAME as API_KEYS_EXTENSION
from api.auth import TOKENS_EXTENSION_NAME, ApiKeys, require_api_key
from api.middleware import init_cors, init_limits, register_security_headers
from api.services import init_services
from api.tokens import TokenCodec
from effects.registry import load_plugins
from shared.settings import Settings
from shared.telemetry import configure_logging

logger = logging.getLogger(__name__)

#: Room for the multipart envelope around an upload of the largest allowed size.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


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
    load_plugins(settings.effect_plugins)
    init_services(app, settings)
    app.extensions[API_KEYS_EXTENSION] = ApiKeys.from_keys(settings.api_keys)
    app.extensions[TOKENS_EXTENSION_NAME] = TokenCodec(settings.signing_key)
    middleware.register(app)
    app.before_request(require_api_key)
    blueprints = (
        jobs.blueprint,
        jobs.events_blueprint,
        files.blueprint,
        health.blueprint,
        openapi.blueprint,
        files.page_blueprint,
        auth.webhooks_blueprint,
        health.metrics_blueprint,
        auth.client_tokens_blueprint,
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
