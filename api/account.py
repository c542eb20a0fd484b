"""What an API key asks for itself: GET /v1/webhooks/secret, the secret that signs its
webhook deliveries, POST /v1/client-tokens, where a shop's server trades its secret key
for a token its customers' browsers may use (api/tokens.py), and GET /v1/usage, what it
used day by day."""

from __future__ import annotations

from datetime import date
from typing import Any

from flask import Blueprint, current_app, request

from api.middleware import CLIENT_TOKENS_EXTENSION, key_id, services
from api.tokens import TokenCodec
from shared.errors import InvalidParameter, MalformedRequest
from shared.settings import MAX_CLIENT_TOKEN_TTL_S, normalised_origin
from shared.telemetry import NO_KEY, USAGE_COUNTS, utc_today
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


# GET /v1/usage?from=YYYY-MM-DD&to=YYYY-MM-DD: what this key used, per UTC day.

usage_blueprint = Blueprint("usage", __name__, url_prefix="/v1/usage")

#: The longest span one request may ask for (the figures are kept 400 days).
MAX_USAGE_DAYS = 366


@usage_blueprint.get("")
def usage() -> dict[str, Any]:
    svc = services()
    today = utc_today()
    first = _parse_day(request.args.get("from"), "from", today.replace(day=1))
    last = _parse_day(request.args.get("to"), "to", today)
    if last < first:
        raise InvalidParameter("to is before from", field="to")
    if (last - first).days >= MAX_USAGE_DAYS:
        raise InvalidParameter(f"ask for at most {MAX_USAGE_DAYS} days at once", field="from")
    days = svc.usage.days(key_id(), first, last)
    body: dict[str, Any] = {
        "key_id": key_id() or NO_KEY,
        "from": first.isoformat(),
        "to": last.isoformat(),
        "days": days,
        "total": _summed(days),
    }
    allowance = svc.settings.key_allowances.get(key_id())
    if allowance is not None:
        used = int(svc.usage.photos_this_month(key_id(), today))
        body["allowance"] = {
            "photos_per_month": allowance,
            "used": used,
            "left": max(0, allowance - used),
        }
    return body


def _parse_day(raw: str | None, name: str, default: date) -> date:
    if not raw:
        return default
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise InvalidParameter(
            f"{name} must be a date, YYYY-MM-DD; got {raw!r}", field=name
        ) from None


def _summed(days: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {name: 0 for name in USAGE_COUNTS}
    results: dict[str, int] = {}
    for day in days:
        for name in USAGE_COUNTS:
            total[name] += day[name]
        for kind, count in day["results"].items():
            results[kind] = results.get(kind, 0) + count
    total["inference_s"] = round(total["inference_s"], 3)
    total["results"] = dict(sorted(results.items()))
    return total
