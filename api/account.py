"""What an API key asks for itself: GET /v1/webhooks/secret, the secret that signs its
webhook deliveries, and POST /v1/client-tokens, where a shop's server trades its secret key
for a token its customers' browsers may use (api/tokens.py)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, request

from api.middleware import CLIENT_TOKENS_EXTENSION, key_id, services
from api.tokens import TokenCodec
from shared.errors import InvalidParameter, MalformedRequest
from shared.settings import MAX_CLIENT_TOKEN_TTL_S, normalised_origin
from shared.webhooks import SIGNATURE_HEADER, WEBHOOK_EVENT_TYPES, webhook_secret

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
    codec: TokenCodec = current_app.extensions[CLIENT_TOKENS_EXTENSION]
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
