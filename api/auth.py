"""API keys: when CUTFX_API_KEYS is set, every /v1 route but signed downloads needs one."""

from __future__ import annotations

import hmac

from flask import request

from api.services import services
from shared.errors import Unauthorized

PROTECTED_PREFIX = "/v1/"
#: Signed links carry their own authorisation; the catalogue documents the API.
OPEN_PREFIXES = ("/v1/files/", "/v1/openapi.json", "/v1/effects")


def presented_key() -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("X-API-Key") or request.args.get("api_key")


def key_id() -> str:
    """The API key a request acts for: its webhook secret derives from it ("" when keys are off)."""
    if not services().settings.api_keys:
        return ""
    return presented_key() or ""


def require_api_key() -> None:
    keys = services().settings.api_keys
    if not keys or not request.path.startswith(PROTECTED_PREFIX):
        return
    if request.path.startswith(OPEN_PREFIXES):
        return
    key = presented_key()
    if key is None:
        raise Unauthorized("an API key is required: send 'Authorization: Bearer <key>'")
    if not any(hmac.compare_digest(key, known) for known in keys):
        raise Unauthorized("the API key is not valid")
