"""The result cache: an index in Redis over content-addressed objects in storage.

A result's object key already names everything that determines it (input
digest, model identity, effect, canonical parameters, format and quality), so
the cache only remembers what is known of each stored object. An entry whose
object has gone from storage is dropped and counts as a miss, never served.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import redis

from shared.job import CUTOUT, RESULT_SUCCEEDED, ResultRecord
from shared.metrics import CACHE_LOOKUPS, Metrics
from shared.storage import Storage

ENTRY_PREFIX = "cutfx:cache:"
#: The identity of the model the gpu workers run, published when one is ready.
CURRENT_MODEL_KEY = "cutfx:model:current"


@dataclass(frozen=True)
class CachedObject:
    key: str
    content_type: str
    byte_size: int
    width: int
    height: int


def result_kind(name: str) -> str:
    return "cutout" if name == CUTOUT else "effect"


class ResultCache:
    def __init__(self, client: redis.Redis, storage: Storage, ttl_s: int, where: str) -> None:
        self.redis = client
        self.storage = storage
        self.ttl_s = ttl_s
        # The API looks at submit, a worker again before it works: counted apart.
        self.where = where
        self.metrics = Metrics(client)

    def lookup(self, key: str, kind: str | None = None) -> CachedObject | None:
        """The cached object, or None; counted as a hit or miss of `kind` when one is given."""
        raw = self.redis.get(ENTRY_PREFIX + key)
        found = None
        if raw is not None:
            if self.storage.exists(key):
                found = CachedObject(**json.loads(raw))
            else:
                self.redis.delete(ENTRY_PREFIX + key)  # repaired: the next run stores it again
        if kind is not None:
            outcome = "hit" if found else "miss"
            labels = {"kind": kind, "outcome": outcome, "where": self.where}
            self.metrics.increment(CACHE_LOOKUPS, labels)
        return found

    def remember(self, cached: CachedObject) -> None:
        self.redis.set(ENTRY_PREFIX + cached.key, json.dumps(asdict(cached)), ex=self.ttl_s)

    def current_model(self) -> str | None:
        raw = self.redis.get(CURRENT_MODEL_KEY)
        return raw.decode() if isinstance(raw, bytes) else raw

    def publish_model(self, model_id: str) -> None:
        self.redis.set(CURRENT_MODEL_KEY, model_id)


def record_stored(record: ResultRecord, stored: CachedObject) -> None:
    """Mark a result succeeded with what is known of the object that holds it."""
    record.status = RESULT_SUCCEEDED
    record.key = stored.key
    record.content_type = stored.content_type
    record.byte_size = stored.byte_size
    record.width = stored.width
    record.height = stored.height
    record.error = None
