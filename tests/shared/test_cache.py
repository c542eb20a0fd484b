"""ResultCache.get_or_store on a real Redis and real local storage."""

from __future__ import annotations

import pytest

from shared.errors import TransientStorageError
from shared.jobs.plan import ENTRY_PREFIX, Rendered, ResultCache
from shared.storage import LocalStorage
from shared.telemetry import CACHE_LOOKUPS, Metrics

KEY = "results/ab/one.webp"


@pytest.fixture
def storage(tmp_path):
    return LocalStorage(tmp_path / "storage", "test-signing-key")


@pytest.fixture
def cache(text_redis, storage):
    return ResultCache(text_redis, storage, Metrics(text_redis), 600, where="worker")


def made(calls: list[int]):
    def make() -> Rendered:
        calls.append(1)
        return Rendered(b"RIFF....WEBP", "image/webp", 3, 2)

    return make


def test_a_miss_makes_stores_and_remembers_once(cache, storage):
    calls: list[int] = []
    first = cache.get_or_store(KEY, made(calls), "effect")
    second = cache.get_or_store(KEY, made(calls), "effect")
    assert calls == [1], "the second call found it"
    assert (first.hit, second.hit) == (False, True)
    assert first.stored == second.stored
    assert first.stored.byte_size == 12
    assert (first.stored.width, first.stored.height) == (3, 2)
    assert storage.get(KEY) == b"RIFF....WEBP"
    metrics = cache.metrics
    labels = {"kind": "effect", "where": "worker"}
    assert metrics.counter_value(CACHE_LOOKUPS, {**labels, "outcome": "miss"}) == 1
    assert metrics.counter_value(CACHE_LOOKUPS, {**labels, "outcome": "hit"}) == 1


def test_an_object_gone_from_storage_is_made_again(cache, storage):
    calls: list[int] = []
    cache.get_or_store(KEY, made(calls))
    storage.path_of(KEY).unlink()
    assert not cache.get_or_store(KEY, made(calls)).hit
    assert calls == [1, 1]


class FailingStorage(LocalStorage):
    def put(self, key: str, data: bytes, content_type: str) -> None:
        raise TransientStorageError("storage is away")


def test_no_index_entry_points_at_an_object_that_was_not_written(text_redis, tmp_path):
    storage = FailingStorage(tmp_path / "storage", "k")
    cache = ResultCache(text_redis, storage, Metrics(text_redis), 600, where="worker")
    with pytest.raises(TransientStorageError):
        cache.get_or_store(KEY, made([]))
    assert text_redis.keys(ENTRY_PREFIX + "*") == []
