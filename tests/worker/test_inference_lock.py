"""The cutout's inference lock in a real Redis: one holder at a time, and a lock that
lapsed under a long inference is no failure of the inference."""

from __future__ import annotations

import logging
import time

import pytest
from redis.exceptions import LockError

from worker.tasks import held_while_valid


def test_a_lock_that_lapsed_under_the_block_lets_the_block_finish(text_redis, caplog):
    lock = text_redis.lock("cutfx:lock:test", timeout=0.2, blocking_timeout=1)
    finished = []
    with caplog.at_level(logging.WARNING), held_while_valid(lock):
        time.sleep(0.4)
        finished.append(True)
    assert finished == [True]
    assert "lapsed" in caplog.text


def test_a_held_lock_keeps_a_second_holder_out_until_its_blocking_time(text_redis):
    first = text_redis.lock("cutfx:lock:test", timeout=5, blocking_timeout=1)
    second = text_redis.lock("cutfx:lock:test", timeout=5, blocking_timeout=0.2)
    with held_while_valid(first), pytest.raises(LockError), held_while_valid(second):
        pass
    with held_while_valid(second):
        assert text_redis.get("cutfx:lock:test") is not None
    assert text_redis.get("cutfx:lock:test") is None
