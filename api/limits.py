"""Rate limits (flask-limiter on the job store's Redis): per API key, per client token (each
on its own, with a tighter submit limit), or per client address when keys are off; one limit
for submits, another for everything else.

A breach is a 429 in the error shape with Retry-After, X-RateLimit-Limit,
-Remaining and -Reset (as remove.bg sends them) and the IETF draft's
RateLimit-Limit, -Remaining and -Reset (seconds until the window resets).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request
from flask_limiter import Limiter, RateLimitExceeded
from flask_limiter.util import get_remote_address

from api.auth import client_token, owner
from shared.errors import RateLimited
from shared.redis_location import limits_storage
from shared.settings import Settings

SUBMIT_ENDPOINT = "jobs.create_job"
#: Load balancers and scrapers poll these; they are never limited.
EXEMPT_ENDPOINTS = ("health.healthz", "health.readyz", "metrics.metrics", "static")
KEY_PREFIX = "cutfx:ratelimit"


def rate_limit_key() -> str:
    """Whom a request counts against: its client token, its API key, else its address."""
    caller = owner()
    if caller.token_id:
        return f"token:{caller.token_id}"
    return f"key:{caller.key_id}" if caller.key_id else f"ip:{get_remote_address()}"


def submit_limit(settings: Settings) -> Callable[[], str]:
    """The submit limit of this request's caller: client tokens have their own."""

    def chosen() -> str:
        if client_token() is not None:
            return settings.client_token_submit_rate_limit
        return settings.submit_rate_limit

    return chosen


def init_limits(app: Flask, settings: Settings) -> Limiter:
    storage_uri, storage_options = limits_storage(settings.job_store_url)
    limiter = Limiter(
        key_func=rate_limit_key,
        app=None,
        default_limits=[settings.read_rate_limit],
        storage_uri=storage_uri,
        # A limit check that cannot reach Redis fails fast (503), never hangs a request.
        storage_options={**storage_options, "socket_timeout": 5, "socket_connect_timeout": 5},
        strategy="moving-window",
        headers_enabled=True,
        key_prefix=KEY_PREFIX,
        default_limits_exempt_when=_exempt,
    )
    # Flask runs after_request hooks last-registered first: this one must follow
    # flask-limiter's, which adds the X-RateLimit-* headers it copies.
    app.after_request(_ietf_headers)
    limiter.init_app(app)
    submit_view: Any = app.view_functions[SUBMIT_ENDPOINT]
    limited: Any = limiter.limit(submit_limit(settings), override_defaults=True)(submit_view)
    app.view_functions[SUBMIT_ENDPOINT] = limited
    return limiter


def _exempt() -> bool:
    return request.endpoint in EXEMPT_ENDPOINTS or request.method == "OPTIONS"


def as_cutfx_error(exc: RateLimitExceeded) -> RateLimited:
    return RateLimited(f"rate limit exceeded: {exc.description}; slow down")


def _ietf_headers(response: Response) -> Response:
    """Mirror flask-limiter's X-RateLimit-* headers as RateLimit-* (reset in seconds)."""
    headers = response.headers
    if "X-RateLimit-Limit" not in headers:
        return response
    headers["RateLimit-Limit"] = headers["X-RateLimit-Limit"]
    headers["RateLimit-Remaining"] = headers.get("X-RateLimit-Remaining", "0")
    reset_at = float(headers.get("X-RateLimit-Reset", time.time()))
    headers["RateLimit-Reset"] = str(max(0, math.ceil(reset_at - time.time())))
    return response
