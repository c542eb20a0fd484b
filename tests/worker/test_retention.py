"""Retention of local storage: old objects go, new ones stay, and no index entry is served
for a deleted object. `cutfx gc` by hand, and the workers' periodic sweep."""

from __future__ import annotations

import os
import time

import redis

from cli.main import main
from shared.context import build_context
from shared.jobs.plan import Rendered
from tests.conftest import settings_env

DAY_S = 24 * 3600


def age(storage, key: str, seconds: float) -> None:
    path = storage.unwrapped().path_of(key)
    past = time.time() - seconds
    os.utime(path, (past, past))


def context_for(settings):
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    return build_context(settings, client, "test")


def test_cutfx_gc_deletes_what_outlived_the_result_ttl(settings, redis_client, monkeypatch, capsys):
    settings = settings.with_overrides(result_ttl_s=DAY_S)
    ctx = context_for(settings)
    make = lambda: Rendered(b"RIFF....WEBP", "image/webp", 1, 1)  # noqa: E731
    ctx.cache.get_or_store("results/aa/old.webp", make)
    ctx.cache.get_or_store("results/aa/new.webp", make)
    age(ctx.storage, "results/aa/old.webp", 2 * DAY_S)
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    assert main(["gc"]) == 0
    assert "deleted 1 objects" in capsys.readouterr().out
    assert not ctx.storage.exists("results/aa/old.webp")
    assert ctx.storage.exists("results/aa/new.webp")
    assert ctx.cache.lookup("results/aa/old.webp") is None, "never served once deleted"
    assert ctx.cache.lookup("results/aa/new.webp") is not None


def test_the_periodic_sweep_runs_once_per_interval_across_workers(settings, redis_client):
    from worker.periodic import GarbageCollector

    settings = settings.with_overrides(result_ttl_s=DAY_S)
    ctx = context_for(settings)
    ctx.storage.put("inputs/aa/old.png", b"x", "image/png")
    age(ctx.storage, "inputs/aa/old.png", 2 * DAY_S)
    sweepers = [GarbageCollector(ctx, interval_s=1), GarbageCollector(ctx, interval_s=1)]
    for sweeper in sweepers:
        sweeper.start()
    try:
        deadline = time.monotonic() + 10
        while ctx.storage.exists("inputs/aa/old.png") and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        for sweeper in sweepers:
            sweeper.stop()
    assert not ctx.storage.exists("inputs/aa/old.png")
    assert ctx.redis.ttl("cutfx:gc:lock") > 0, "the lock kept the second sweeper out"
