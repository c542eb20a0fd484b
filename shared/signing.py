"""HMAC-signed, expiring links for the local storage backend."""

from __future__ import annotations

import hashlib
import hmac
import time

from shared.errors import Forbidden


def link_signature(secret: str, key: str, expires_at: int) -> str:
    message = f"{key}\n{expires_at}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify_link(
    secret: str, key: str, expires: str, signature: str, now: float | None = None
) -> None:
    """Raise Forbidden unless the signature matches and the link has not expired."""
    try:
        expires_at = int(expires)
    except ValueError:
        raise Forbidden("the link's expiry is malformed") from None
    expected = link_signature(secret, key, expires_at)
    if not hmac.compare_digest(expected, signature):
        raise Forbidden("the link's signature does not match")
    if (time.time() if now is None else now) > expires_at:
        raise Forbidden("the link has expired")
