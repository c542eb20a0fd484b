"""Keys derived from the one signing secret (local storage signs its links with one).

Each purpose (file links, webhook secrets, idempotency names) gets its own key
derived from CUTFX_SIGNING_KEY, so a key exposed for one purpose opens nothing
else.
"""

from __future__ import annotations

import hashlib
import hmac
from enum import StrEnum


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
