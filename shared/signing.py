"""Keys derived from the one signing secret, and the HMAC-signed links of local storage.

Each purpose (file links, webhook secrets, idempotency names) gets its own key
derived from CUTFX_SIGNING_KEY, so a key exposed for one purpose opens nothing
else.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from enum import StrEnum

from shared.errors import Forbidden


class Purpose(StrEnum):
    FILE_LINKS = "file-links"
    WEBHOOKS = "webhooks"
    IDEMPOTENCY = "idempotency"
    CLIENT_TOKENS = "client-tokens"


def derive_key(secret: str, purpose: Purpose) -> str:
    """HMAC-SHA256 of the purpose under the secret: one independent key per purpose."""
    return hmac.new(secret.encode(), f"cutfx/{purpose}".encode(), hashlib.sha256).hexdigest()


def keyed_digest(key: str, text: str) -> str:
    """A name for `text` that reveals nothing of it without the key."""
    return hmac.new(key.encode(), text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def link_signature(link_key: str, key: str, expires_at: int) -> str:
    message = f"{key}\n{expires_at}".encode()
    return hmac.new(link_key.encode(), message, hashlib.sha256).hexdigest()


def verify_link(
    link_key: str,
    key: str,
    expires: str,
    signature: str,
    max_ttl_s: int,
    now: float | None = None,
) -> None:
    """Raise Forbidden unless the signature matches, the link has not expired, and it
    does not live longer than links may (max_ttl_s from now)."""
    try:
        expires_at = int(expires)
    except ValueError:
        raise Forbidden("the link's expiry is malformed") from None
    expected = link_signature(link_key, key, expires_at)
    # Bytes, so that a non-ASCII signature is a mismatch and not a TypeError.
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "surrogatepass")):
        raise Forbidden("the link's signature does not match")
    current = time.time() if now is None else now
    if current > expires_at:
        raise Forbidden("the link has expired")
    if expires_at - current > max_ttl_s:
        raise Forbidden("the link claims a longer life than links are given")
