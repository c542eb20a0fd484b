"""Idempotency-Key: the same key with the same request gives the same job, once.

The first request claims the key (SET NX) with a fingerprint of what it asks
for and the job id it will create; a repeat with the same fingerprint gets
that job, one with another fingerprint is a conflict. Keys expire after
CUTFX_IDEMPOTENCY_TTL_S.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import redis

from shared.errors import IdempotencyConflict, MalformedRequest
from shared.signing import keyed_digest

PREFIX = "cutfx:idempotency:"
MAX_KEY_LENGTH = 255
#: A repeat that arrives while the first request is still creating its job waits this long.
IN_FLIGHT_WAIT_S = 5.0


def check_key(raw: str) -> str:
    if not 1 <= len(raw) <= MAX_KEY_LENGTH or not raw.isprintable():
        raise MalformedRequest(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters",
            field="Idempotency-Key",
        )
    return raw


class IdempotencyStore:
    def __init__(self, client: redis.Redis, ttl_s: int, naming_key: str) -> None:
        """`naming_key` keys the digests that name entries, so no client key is stored."""
        self.redis = client
        self.ttl_s = ttl_s
        self.naming_key = naming_key

    def _name(self, scope: str, key: str) -> str:
        return f"{PREFIX}{scope}:{keyed_digest(self.naming_key, key)}"

    def claim(self, scope: str, key: str, fingerprint: str, job_id: str) -> str | None:
        """None when this request now owns the key; else the job id of the earlier one."""
        entry = json.dumps({"fingerprint": fingerprint, "job_id": job_id})
        if self.redis.set(self._name(scope, key), entry, nx=True, ex=self.ttl_s):
            return None
        raw: Any = self.redis.get(self._name(scope, key))
        if raw is None:  # expired between the two calls: claim it afresh
            return self.claim(scope, key, fingerprint, job_id)
        earlier = json.loads(raw)
        if earlier["fingerprint"] != fingerprint:
            raise IdempotencyConflict(
                "this Idempotency-Key was used with a different request; use a new key",
                field="Idempotency-Key",
            )
        return str(earlier["job_id"])

    def release(self, scope: str, key: str) -> None:
        """Forget a claim whose request failed, so that the client may retry with the key."""
        self.redis.delete(self._name(scope, key))


def wait_for_job(
    exists: Callable[[str], bool], job_id: str, timeout_s: float = IN_FLIGHT_WAIT_S
) -> None:
    """The earlier request may still be creating its job; wait a little for it."""
    deadline = time.monotonic() + timeout_s
    while not exists(job_id):
        if time.monotonic() > deadline:
            raise IdempotencyConflict(
                "a request with this Idempotency-Key is still being processed; retry shortly",
                field="Idempotency-Key",
            )
        time.sleep(0.05)
