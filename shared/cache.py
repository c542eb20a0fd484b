"""The result cache: an index in Redis over content-addressed objects in storage.

A result's object key already names everything that determines it (input
digest, model identity, effect, canonical parameters, format and quality), so
the cache only remembers what is known of each stored object. An entry whose
object has gone from storage is dropped and counts as a miss, never served.

The index is kept per scope: per API key by default (CUTFX_CACHE_SCOPE=tenant),
so a hit never tells one tenant that another uploaded the same photo; the
objects themselves are content-addressed and may be shared.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import redis

from shared.jobs.model import StoredObject
from shared.metrics import CACHE_LOOKUPS, Metrics
from shared.storage import Storage

ENTRY_PREFIX = "cutfx:cache:"
GLOBAL_SCOPE = "global"
#: The identity of the model the gpu workers run, published when one is ready.
CURRENT_MODEL_KEY = "cutfx:model:current"


@dataclass(frozen=True)
class Rendered:
    """An object made to be stored: its bytes and what the cache remembers of it."""

    data: bytes
    content_type: str
    width: int
    height: int
    source_width: int | None = None
    source_height: int | None = None
    subject: dict[str, float] | None = None


@dataclass(frozen=True)
class Lookup:
    """What get_or_store found or made, and whether it was already there."""

    stored: StoredObject
    hit: bool


def cache_scope(setting: str, owner: str) -> str:
    """The index scope of `owner`'s results under CUTFX_CACHE_SCOPE (`tenant` or `global`)."""
    return GLOBAL_SCOPE if setting == GLOBAL_SCOPE else f"tenant:{owner}"


class ResultCache:
    def __init__(
        self,
        client: redis.Redis,
        storage: Storage,
        metrics: Metrics,
        ttl_s: int,
        where: str,
        scope: str = GLOBAL_SCOPE,
    ) -> None:
        """`client` decodes replies; `where` labels the lookups (the API at submit, a worker)."""
        self.redis = client
        self.storage = storage
        self.metrics = metrics
        self.ttl_s = ttl_s
        self.where = where
        self.scope = scope

    def scoped(self, scope: str) -> ResultCache:
        """The same cache, looking only at the index of `scope`."""
        return ResultCache(self.redis, self.storage, self.metrics, self.ttl_s, self.where, scope)

    def _entry(self, key: str) -> str:
        return f"{ENTRY_PREFIX}{self.scope}:{key}"

    def lookup(self, key: str, kind: str | None = None) -> StoredObject | None:
        """The cached object, or None; counted as a hit or miss of `kind` when one is given."""
        raw = self.redis.get(self._entry(key))
        found = None
        if raw is not None:
            if self.storage.exists(key):
                found = StoredObject(**json.loads(raw))
            else:
                self.redis.delete(self._entry(key))  # repaired: the next run stores it again
        if kind is not None:
            outcome = "hit" if found else "miss"
            labels = {"kind": kind, "outcome": outcome, "where": self.where}
            self.metrics.increment(CACHE_LOOKUPS, labels)
        return found

    def get_or_store(
        self, key: str, make: Callable[[], Rendered], kind: str | None = None
    ) -> Lookup:
        """The object under `key`: found in the cache, or made, stored and remembered now.

        The index entry is written only after storage took the bytes, so it never
        points at an object that was not written.
        """
        found = self.lookup(key, kind)
        if found is not None:
            return Lookup(found, hit=True)
        rendered = make()
        self.storage.put(key, rendered.data, rendered.content_type)
        stored = StoredObject(
            key,
            rendered.content_type,
            len(rendered.data),
            rendered.width,
            rendered.height,
            rendered.source_width,
            rendered.source_height,
            rendered.subject,
        )
        self.redis.set(self._entry(key), json.dumps(asdict(stored)), ex=self.ttl_s)
        return Lookup(stored, hit=False)

    def current_model(self) -> str | None:
        model_id: Any = self.redis.get(CURRENT_MODEL_KEY)
        return str(model_id) if model_id is not None else None

    def publish_model(self, model_id: str) -> None:
        self.redis.set(CURRENT_MODEL_KEY, model_id)
