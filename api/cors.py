"""CORS (flask-cors): pages on the origins some API key allows may call the API.

Preflights are answered for every origin named in CUTFX_CORS_ORIGINS or
CUTFX_KEY_ORIGINS (a preflight carries no credential, so it cannot be told
apart by key); which origin a given key or client token may really be used
from is checked when the request itself arrives (api/auth.py). Other origins
get no CORS headers at all, so the browser keeps the answer from the page.
"""

from __future__ import annotations

from flask import Flask
from flask_cors import CORS

from shared.settings import Settings

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
