"""POST /v1/client-tokens: a shop's server trades its secret key for a browser's token."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, request

from api.auth import TOKENS_EXTENSION_NAME, key_id
from api.services import services
from api.tokens import TokenCodec
from shared.errors import InvalidParameter, MalformedRequest
from shared.settings import MAX_CLIENT_TOKEN_TTL_S, normalised_origin

blueprint = Blueprint("client_tokens", __name__, url_prefix="/v1/client-tokens")

#: A token lives at least this long: less is no use to a page that uploads a photo.
MIN_TTL_S = 10
MAX_JOBS_PER_TOKEN = 1000


@blueprint.post("")
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
