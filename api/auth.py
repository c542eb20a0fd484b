"""Who a request acts for: an API key (the shop's server) or a client token (its customers'
browsers), and from which browser origin it may do so; and the routes a key uses for its
credentials: POST /v1/client-tokens and GET /v1/webhooks/secret.

Keys come from CUTFX_API_KEYS and are held in memory only as sha256 digests,
each with a non-secret id ("key_" and 16 hex digits of the digest): the id is
what job records, idempotency names, logs and rate limits carry, never the key.
With no keys configured (development only) every request acts for ANONYMOUS.

A request that carries a credential and an Origin header (a browser's) must come
from an origin its key allows (CUTFX_CORS_ORIGINS, CUTFX_KEY_ORIGINS) or, for a
client token, from the token's own origin; the API's own pages are always allowed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, current_app, g, request

from api.services import services
from api.tokens import ClientToken, TokenCodec, is_client_token
from shared.errors import (
    Forbidden,
    InvalidParameter,
    MalformedRequest,
    OriginNotAllowed,
    Unauthorized,
)
from shared.jobs.model import Owner
from shared.settings import MAX_CLIENT_TOKEN_TTL_S, normalised_origin
from shared.webhooks import SIGNATURE_HEADER, WEBHOOK_EVENT_TYPES, webhook_secret

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
EXTENSION_NAME = "cutfx.api_keys"
TOKENS_EXTENSION_NAME = "cutfx.client_tokens"


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
    keys: ApiKeys = current_app.extensions[EXTENSION_NAME]
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
    codec: TokenCodec = current_app.extensions[TOKENS_EXTENSION_NAME]
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


# GET /v1/webhooks/secret: the secret that signs this API key's webhook deliveries.

webhooks_blueprint = Blueprint("webhooks", __name__, url_prefix="/v1/webhooks")


@webhooks_blueprint.get("/secret")
def secret() -> dict[str, Any]:
    svc = services()
    return {
        "secret": webhook_secret(svc.settings.signing_key, key_id()),
        "signature_header": SIGNATURE_HEADER,
        "signature_format": "t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.<raw body>'>",
        "event_types": list(WEBHOOK_EVENT_TYPES),
    }


# POST /v1/client-tokens: a shop's server trades its secret key for a browser's token.

client_tokens_blueprint = Blueprint("client_tokens", __name__, url_prefix="/v1/client-tokens")

#: A token lives at least this long: less is no use to a page that uploads a photo.
MIN_TTL_S = 10
MAX_JOBS_PER_TOKEN = 1000


@client_tokens_blueprint.post("")
def create_client_token() -> tuple[dict[str, Any], int]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise MalformedRequest('send a JSON object: {"origin": "https://shop.example"}')
    unknown = sorted(set(body) - {"origin", "ttl_s", "max_jobs"})
    if unknown:
        raise InvalidParameter(f"unknown field {unknown[0]!r}", field=unknown[0])
    settings = services().settings
    origin = _parse_origin(body.get("origin"), settings.origins_of(key_id()))
    ttl_s = _parse_count(
        body.get("ttl_s", settings.client_token_ttl_s), "ttl_s", MIN_TTL_S, MAX_CLIENT_TOKEN_TTL_S
    )
    raw_max_jobs = body.get("max_jobs")
    max_jobs = (
        None
        if raw_max_jobs is None
        else _parse_count(raw_max_jobs, "max_jobs", 1, MAX_JOBS_PER_TOKEN)
    )
    codec: TokenCodec = current_app.extensions[TOKENS_EXTENSION_NAME]
    secret, token = codec.issue(key_id(), origin, ttl_s, max_jobs)
    return {
        "token": secret,
        "token_id": token.token_id,
        "origin": token.origin,
        "expires_at": token.expires_at,
        "max_jobs": token.max_jobs,
    }, 201


def _parse_origin(raw: Any, allowed: frozenset[str]) -> str:
    if not isinstance(raw, str):
        raise InvalidParameter(
            "origin is required: the shop page's scheme://host[:port]", field="origin"
        )
    try:
        origin = normalised_origin(raw)
    except ValueError as exc:
        raise InvalidParameter(str(exc), field="origin") from None
    if origin not in allowed:
        raise InvalidParameter(
            f"{origin} is not among this API key's origins (CUTFX_CORS_ORIGINS, CUTFX_KEY_ORIGINS)",
            field="origin",
        )
    return origin


def _parse_count(raw: Any, name: str, low: int, high: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high:
        raise InvalidParameter(f"{name} must be a whole number from {low} to {high}", field=name)
    return raw
