"""API keys: who a request acts for.

Keys come from CUTFX_API_KEYS and are held in memory only as sha256 digests,
each with a non-secret id ("key_" and 16 hex digits of the digest): the id is
what job records, idempotency names, logs and rate limits carry, never the key.
With no keys configured (development only) every request acts for ANONYMOUS.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from flask import current_app, g, request

from shared.errors import Unauthorized

PROTECTED_PREFIX = "/v1/"
#: Signed links carry their own authorisation; the catalogue documents the API.
OPEN_PREFIXES = ("/v1/files/", "/v1/openapi.json", "/v1/effects")
ANONYMOUS = ""
EXTENSION_NAME = "cutfx.api_keys"


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


def presented_key() -> str | None:
    """The key in the Authorization or X-API-Key header; never read from the URL."""
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("X-API-Key")


def key_id() -> str:
    """The id of the key this request acts for (ANONYMOUS when keys are off)."""
    found: str = g.get("key_id", ANONYMOUS)
    return found


def require_api_key() -> None:
    """before_request: identify the caller; a /v1 route but the open ones needs a valid key."""
    keys: ApiKeys = current_app.extensions[EXTENSION_NAME]
    if not keys.enabled:
        g.key_id = ANONYMOUS
        return
    raw = presented_key()
    identified = keys.identify(raw) if raw else None
    if identified is not None:
        g.key_id = identified
        return
    if not request.path.startswith(PROTECTED_PREFIX) or request.path.startswith(OPEN_PREFIXES):
        return
    if raw is None:
        raise Unauthorized("an API key is required: send 'Authorization: Bearer <key>'")
    raise Unauthorized("the API key is not valid")
