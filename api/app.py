"""create_app: settings, services, blueprints and error handlers."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask

from api import catalog, errors, events, files, health, jobs, metrics, page, timing, webhooks
from api.auth import require_api_key
from api.services import init_services
from effects.registry import load_plugins
from shared.logging import configure_logging
from shared.settings import Settings

logger = logging.getLogger(__name__)

#: Room for the multipart envelope around an upload of the largest allowed size.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    settings = (test_config or {}).get("CUTFX_SETTINGS") or Settings.from_env()
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
    timing.register(app)
    app.before_request(require_api_key)
    for module in (jobs, events, files, health, catalog, page, webhooks, metrics):
        app.register_blueprint(module.blueprint)
    errors.register(app)
    if settings.uses_development_signing_key:
        logger.warning("CUTFX_SIGNING_KEY is the development default; set your own in production")
    return app
