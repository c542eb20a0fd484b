"""What every request passes through besides its route, and what it reaches.

- The app's services (`services()`): connections made once per app by create_app.
- Who the request acts for: an API key (the shop's server) or a client token (its
  customers' browsers), and from which browser origin it may do so. Keys come from
  CUTFX_API_KEYS and are held in memory only as sha256 digests, each with a non-secret
  id ("key_" and 16 hex digits of the digest): the id is what job records, idempotency
  names, logs and rate limits carry, never the key. With no keys configured (development
  only) every request acts for ANONYMOUS. A request that carries a credential and an
  Origin header (a browser's) must come from an origin its key allows
  (CUTFX_CORS_ORIGINS, CUTFX_KEY_ORIGINS) or, for a client token, from the token's own
  origin; the API's own pages are always allowed.
- Timings (the Server-Timing header and request metrics shared through Redis), security
  headers, CORS and rate limits.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery
from flask import Flask, Response, current_app, g, request
from flask_cors import CORS
from flask_limiter import Limiter, RateLimitExceeded
from flask_limiter.util import get_remote_address

from api.idempotency import IdempotencyStore
from api.tokens import ClientToken, TokenCodec, TokenQuota, is_client_token
from api.upload import DecodePool
from shared.context import ServiceContext
from shared.errors import Forbidden, OriginNotAllowed, RateLimited, TooManyStreams, Unauthorized
from shared.jobs.model import Owner
from shared.jobs.store import CLAIM_COUNTED_SLOT
from shared.redis_location import limits_storage
from shared.settings import Settings
from shared.telemetry import (
    REQUEST_SECONDS,
    REQUESTS,
    TRACEPARENT_HEADER,
    continued_trace,
    trace_headers,
    trace_span,
)

# --- the app's services ----------------------------------------------------------------

SERVICES_EXTENSION = "cutfx"


@dataclass(frozen=True)
class Services(ServiceContext):
    """The shared service context plus what only the API uses; built by create_app."""

    celery: Celery
    idempotency: IdempotencyStore
    decoder: DecodePool
    token_quota: TokenQuota
    stream_slots: StreamSlots


# --- open streams per key: leases in Redis, so every API process counts the same ------------

STREAMS_PREFIX = "cutfx:streams:"
#: A slot lapses this long after its last renewal: an API process that died mid-stream
#: frees its slots by itself. Streams renew at every event or keep-alive (a few seconds).
STREAM_LEASE_S = 90
#: How soon a key at its cap should try again.
STREAMS_RETRY_AFTER_S = 5


class StreamSlots:
    """At most `cap` open event streams and long-polls per API key, across processes."""

    def __init__(self, client: redis.Redis, cap: int) -> None:
        self.redis = client
        self.cap = cap
        self._claim = client.register_script(CLAIM_COUNTED_SLOT)

    @staticmethod
    def _key(key_id: str) -> str:
        return f"{STREAMS_PREFIX}{{{key_id or ANONYMOUS_SLOTS}}}"

    def claim(self, key_id: str) -> str:
        """A slot for one stream; TooManyStreams when the key holds all of its own."""
        slot = secrets.token_hex(8)
        now = time.time()
        claimed = self._claim(
            keys=[self._key(key_id)], args=[slot, now, now - STREAM_LEASE_S, self.cap]
        )
        if not claimed:
            raise TooManyStreams(
                f"this API key has {self.cap} event streams and long-polls open; close one, "
                "or wait",
                retry_after_s=STREAMS_RETRY_AFTER_S,
            )
        return slot

    def renew(self, key_id: str, slot: str) -> None:
        self.redis.zadd(self._key(key_id), {slot: time.time()}, xx=True)

    def release(self, key_id: str, slot: str) -> None:
        self.redis.zrem(self._key(key_id), slot)

    @contextmanager
    def held(self, key_id: str) -> Iterator[None]:
        """A slot for the block (a long-poll)."""
        slot = self.claim(key_id)
        try:
            yield
        finally:
            self.release(key_id, slot)


#: Whose slots requests without a key take (development).
ANONYMOUS_SLOTS = "none"


def services() -> Services:
    found: Services = current_app.extensions[SERVICES_EXTENSION]
    return found


# --- who a request acts for -------------------------------------------------------------

PROTECTED_PREFIX = "/v1/"
#: Signed links carry their own authorisation; the catalogue and client document the API.
OPEN_PREFIXES = ("/v1/files/", "/v1/openapi.json", "/v1/effects", "/v1/client.js")
#: What a client token may do: submit, follow and cancel its own jobs, and wake a worker.
TOKEN_ENDPOINTS = frozenset(
    {
        "jobs.create_job",
        "jobs.get_job",
        "jobs.cancel_job",
        "events.job_events",
        "health.warmup",
    }
)
ANONYMOUS = ""
API_KEYS_EXTENSION = "cutfx.api_keys"
CLIENT_TOKENS_EXTENSION = "cutfx.client_tokens"


def key_digest(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode("utf-8", "surrogatepass")).hexdigest()


def key_id_of(raw_key: str) -> str:
    """The non-secret id of an API key."""
    return "key_" + key_digest(raw_key)[:16]


@dataclass(frozen=True)
class ApiKeys:
    """The configured keys as digest → id; empty when keys are off."""

    ids_by_digest: dict[str, str]

    @classmethod
    def from_keys(cls, raw_keys: tuple[str, ...]) -> ApiKeys:
        return cls({key_digest(key): key_id_of(key) for key in raw_keys})

    @property
    def enabled(self) -> bool:
        return bool(self.ids_by_digest)

    def identify(self, raw_key: str) -> str | None:
        # A dict lookup of a digest: comparing digests leaks nothing usable about a key.
        return self.ids_by_digest.get(key_digest(raw_key))

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every configured key's id; ANONYMOUS alone when keys are off."""
        return tuple(sorted(set(self.ids_by_digest.values()))) if self.enabled else (ANONYMOUS,)

    def has_id(self, key_id: str) -> bool:
        """Whether a key with this id is configured (ANONYMOUS when keys are off)."""
        if not self.enabled:
            return key_id == ANONYMOUS
        return key_id in self.ids_by_digest.values()


def presented_key() -> str | None:
    """The credential in the Authorization or X-API-Key header; never read from the URL."""
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("X-API-Key")


def owner() -> Owner:
    """Whom this request acts for (the anonymous owner when keys are off)."""
    found: Owner = g.get("owner", Owner(ANONYMOUS))
    return found


def key_id() -> str:
    """The id of the key this request acts for (ANONYMOUS when keys are off)."""
    return owner().key_id


def client_token() -> ClientToken | None:
    """The client token this request came with, if it came with one."""
    found: ClientToken | None = g.get("client_token")
    return found


def require_api_key() -> None:
    """before_request: identify the caller; a /v1 route but the open ones needs a credential."""
    if request.method == "OPTIONS":
        # CORS preflights carry no credentials; they are answered by the CORS layer.
        return
    keys: ApiKeys = current_app.extensions[API_KEYS_EXTENSION]
    raw = presented_key()
    if raw and is_client_token(raw):
        _accept_client_token(keys, raw)
        return
    if not keys.enabled:
        g.owner = Owner(ANONYMOUS)
        return
    identified = keys.identify(raw) if raw else None
    if identified is not None:
        check_origin(services().settings.origins_of(identified))
        g.owner = Owner(identified)
        return
    if not request.path.startswith(PROTECTED_PREFIX) or request.path.startswith(OPEN_PREFIXES):
        return
    if raw is None:
        raise Unauthorized("an API key is required: send 'Authorization: Bearer <key>'")
    raise Unauthorized("the API key is not valid")


def _accept_client_token(keys: ApiKeys, raw: str) -> None:
    codec: TokenCodec = current_app.extensions[CLIENT_TOKENS_EXTENSION]
    token = codec.verify(raw)
    if not keys.has_id(token.key_id):
        raise Unauthorized("the client token's API key is no longer valid")
    if request.endpoint is not None and request.endpoint not in TOKEN_ENDPOINTS:
        raise Forbidden("a client token may only submit, read and cancel its own jobs")
    check_origin(frozenset({token.origin}))
    g.owner = Owner(token.key_id, token.token_id)
    g.client_token = token


def own_origins() -> frozenset[str]:
    """The origins of the API's own pages: as this request reached it, and as published."""
    own = {request.host_url.rstrip("/").lower()}
    public = services().settings.public_base_url
    if public:
        scheme, _, rest = public.partition("://")
        own.add(f"{scheme}://{rest.split('/', 1)[0]}".lower())
    return frozenset(own)


def check_origin(allowed: frozenset[str]) -> None:
    """A credential sent by a browser (which always names its page's origin) from an origin
    it is not allowed on is refused: a secret key in a browser is a leaked key."""
    origin = request.headers.get("Origin")
    if origin is None or origin.lower() in allowed or origin.lower() in own_origins():
        return
    raise OriginNotAllowed(f"this credential may not be used from {origin}")


# --- timings ----------------------------------------------------------------------------

UNMATCHED_ROUTE = "unmatched"
#: Any other method string is counted as OTHER_METHOD, so a client cannot mint series.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Time a step of this request; it appears in the response's Server-Timing header,
    and as a span of the request's trace."""
    started = time.perf_counter()
    try:
        with trace_span(name):
            yield
    finally:
        g.setdefault("stages", []).append((name, time.perf_counter() - started))


def _start() -> None:
    g.request_started = time.perf_counter()
    _start_request_span()


def _start_request_span() -> None:
    """The request's span, continuing the caller's trace when it sent a `traceparent`."""
    stack = ExitStack()
    stack.enter_context(continued_trace(dict(request.headers.items())))
    route = request.url_rule.rule if request.url_rule is not None else UNMATCHED_ROUTE
    g.request_span = stack.enter_context(
        trace_span(f"{request.method} {route}", **{"http.route": route})
    )
    g.request_trace = stack


def _end_request_span(_: BaseException | None = None) -> None:
    stack = g.pop("request_trace", None)
    if stack is not None:
        stack.close()


def _answer_traceparent(response: Response) -> Response:
    current = g.get("request_span")
    if current is not None:
        current.set_attribute("http.response.status_code", response.status_code)
        # The request's span is still the current one here: its context is the answer's.
        response.headers.update(trace_headers())
    return response


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
    app.after_request(_answer_traceparent)
    app.teardown_request(_end_request_span)


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
# from is checked when the request itself arrives (above). Other origins
# get no CORS headers at all, so the browser keeps the answer from the page.

#: What a page sends besides the simple headers.
ALLOWED_HEADERS = (
    "Authorization",
    "X-API-Key",
    "Content-Type",
    "Idempotency-Key",
    "Cancel-After",
    "Last-Event-ID",
    # A shop's page that traces its own requests continues its trace into the job's.
    TRACEPARENT_HEADER,
)
#: What a page may read of an answer besides the simple headers.
EXPOSED_HEADERS = (
    "Location",
    "Retry-After",
    "Idempotent-Replayed",
    "Server-Timing",
    TRACEPARENT_HEADER,
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
    # Flask runs after_request hooks last-registered first: these must follow
    # flask-limiter's, which adds the X-RateLimit-* headers _ietf_headers copies, and a
    # Retry-After to every 429, the rate window's, which a 429 of cutfx's own replaces.
    app.after_request(_own_retry_after)
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


#: Where an error that says when to retry leaves its wait for _own_retry_after.
RETRY_AFTER_G = "retry_after_s"


def _own_retry_after(response: Response) -> Response:
    """An error's own Retry-After (a stream cap, the unfinished-job cap, an allowance)."""
    retry_after_s = g.get(RETRY_AFTER_G)
    if retry_after_s is not None:
        response.headers["Retry-After"] = str(retry_after_s)
    return response


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
