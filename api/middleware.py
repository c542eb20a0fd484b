"""What every request passes through besides its route: timings (the Server-Timing header
and request metrics shared through Redis), CORS, rate limits, security headers."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis
from flask import Flask, Response, g, request
from flask_cors import CORS
from flask_limiter import Limiter, RateLimitExceeded
from flask_limiter.util import get_remote_address

from api.auth import client_token, owner
from api.services import services
from shared.errors import RateLimited
from shared.redis_location import limits_storage
from shared.settings import Settings
from shared.telemetry import REQUEST_SECONDS, REQUESTS

UNMATCHED_ROUTE = "unmatched"
#: Any other method string is counted as OTHER_METHOD, so a client cannot mint series.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Time a step of this request; it appears in the response's Server-Timing header."""
    started = time.perf_counter()
    try:
        yield
    finally:
        g.setdefault("stages", []).append((name, time.perf_counter() - started))


def _start() -> None:
    g.request_started = time.perf_counter()


def _finish(response: Response) -> Response:
    total = time.perf_counter() - g.get("request_started", time.perf_counter())
    stages = [*g.get("stages", []), ("total", total)]
    response.headers["Server-Timing"] = ", ".join(
        f"{name};dur={s * 1000:.1f}" for name, s in stages
    )
    route = request.url_rule.rule if request.url_rule is not None else UNMATCHED_ROUTE
    method = request.method if request.method in KNOWN_METHODS else OTHER_METHOD
    labels = {"route": route, "method": method, "status": str(response.status_code)}
    try:
        metrics = services().metrics
        metrics.increment(REQUESTS, labels)
        metrics.observe(REQUEST_SECONDS, total, {"route": route})
    except redis.RedisError:
        pass  # metrics must never fail a request; the request itself reports Redis trouble
    return response


def register(app: Flask) -> None:
    app.before_request(_start)
    app.after_request(_finish)


# Headers every answer carries: no sniffing, no framing, no referrer leaks, a strict CSP.

#: The page loads its own script and style only; images come from this origin, signed
#: storage URLs (https) and the inline favicon (data:). No inline script anywhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' https: data: blob:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def _add_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def register_security_headers(app: Flask) -> None:
    app.after_request(_add_headers)


# CORS (flask-cors): pages on the origins some API key allows may call the API.
#
# Preflights are answered for every origin named in CUTFX_CORS_ORIGINS or
# CUTFX_KEY_ORIGINS (a preflight carries no credential, so it cannot be told
# apart by key); which origin a given key or client token may really be used
# from is checked when the request itself arrives (api/auth.py). Other origins
# get no CORS headers at all, so the browser keeps the answer from the page.

#: What a page sends besides the simple headers.
ALLOWED_HEADERS = (
    "Authorization",
    "X-API-Key",
    "Content-Type",
    "Idempotency-Key",
    "Cancel-After",
    "Last-Event-ID",
)
#: What a page may read of an answer besides the simple headers.
EXPOSED_HEADERS = (
    "Location",
    "Retry-After",
    "Idempotent-Replayed",
    "Server-Timing",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
)
METHODS = ("GET", "POST", "DELETE", "OPTIONS")
#: How long a browser may reuse a preflight's answer.
PREFLIGHT_MAX_AGE_S = 600


def init_cors(app: Flask, settings: Settings) -> None:
    CORS(
        app,
        resources={r"/v1/*": {"origins": sorted(settings.every_origin)}},
        allow_headers=list(ALLOWED_HEADERS),
        expose_headers=list(EXPOSED_HEADERS),
        methods=list(METHODS),
        max_age=PREFLIGHT_MAX_AGE_S,
        # Credentials travel in the Authorization header, never in cookies.
        supports_credentials=False,
    )


# Rate limits (flask-limiter on the job store's Redis): per API key, per client token (each
# on its own, with a tighter submit limit), or per client address when keys are off; one limit
# for submits, another for everything else.
#
# A breach is a 429 in the error shape with Retry-After, X-RateLimit-Limit,
# -Remaining and -Reset (as remove.bg sends them) and the IETF draft's
# RateLimit-Limit, -Remaining and -Reset (seconds until the window resets).

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
