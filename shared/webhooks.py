"""Webhook signatures: how cutfx signs the events it POSTs, and how a receiver checks them.

Header `Cutfx-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
The timestamp is inside the signed text, so a captured request cannot be
replayed later than the receiver's tolerance.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from shared.errors import InvalidSignature
from shared.jobs.model import EventType
from shared.signing import Purpose, derive_key

SIGNATURE_HEADER = "Cutfx-Signature"
EVENT_HEADER = "Cutfx-Event"
EVENT_ID_HEADER = "Cutfx-Event-Id"
JOB_ID_HEADER = "Cutfx-Job-Id"
DEFAULT_TOLERANCE_S = 300
#: Event types a job may subscribe to; the default is all of them.
WEBHOOK_EVENT_TYPES = tuple(EventType)


def webhook_secret(signing_key: str, key_id: str) -> str:
    """Each API key has its own webhook secret, derived so that none is stored."""
    webhook_key = derive_key(signing_key, Purpose.WEBHOOKS)
    return hmac.new(webhook_key.encode(), f"webhook:{key_id}".encode(), hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    stamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={digest}"


def verify(
    secret: str,
    header: str,
    body: bytes,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> None:
    """Raise InvalidSignature unless `header` signs `body` recently enough."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        stamp = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError):
        raise InvalidSignature("malformed signature header") from None
    if abs((time.time() if now is None else now) - stamp) > tolerance_s:
        raise InvalidSignature("timestamp outside the tolerance: a replay?")
    expected = sign(secret, body, stamp).split("v1=", 1)[1]
    if not hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogatepass")):
        raise InvalidSignature("signature does not match")
