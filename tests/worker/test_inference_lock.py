"""The cutout's inference lock in a real Redis: one holder at a time, held for as long as
the inference runs, and a lock lost under a long inference is no failure of the inference."""

from __future__ import annotations

import logging
import time

import pytest
from redis.exceptions import LockError

from worker.inference_lock import KEY_PREFIX, inference_lock

KEY = "test"


def test_a_lock_that_lapsed_under_the_block_lets_the_block_finish(text_redis, caplog):
    finished = []
    with caplog.at_level(logging.WARNING), inference_lock(text_redis, KEY, 0.2, 1):
        # What a Redis restarted without its data does to a held lock.
        text_redis.delete(KEY_PREFIX + KEY)
        time.sleep(0.4)
        finished.append(True)
    assert finished == [True]
    assert "lapsed" in caplog.text


def test_a_held_lock_keeps_a_second_holder_out_until_its_blocking_time(text_redis):
    with (
        inference_lock(text_redis, KEY, 5, 1),
        pytest.raises(LockError),
        inference_lock(text_redis, KEY, 5, 0.2),
    ):
        pass
    with inference_lock(text_redis, KEY, 5, 0.2):
        assert text_redis.get(KEY_PREFIX + KEY) is not None
    assert text_redis.get(KEY_PREFIX + KEY) is None


def test_an_inference_longer_than_the_locks_time_to_live_keeps_it(text_redis, caplog):
    """A base-mode forward on a CPU outlasts the 30 s the lock lives: it is renewed, so a
    second worker with the same photo waits for the cutout rather than run it too."""
    with caplog.at_level(logging.WARNING), inference_lock(text_redis, KEY, 0.3, 1):
        time.sleep(1.0)
        assert text_redis.pttl(KEY_PREFIX + KEY) > 0
        with pytest.raises(LockError), inference_lock(text_redis, KEY, 0.3, 0.4):
            pass
    assert text_redis.get(KEY_PREFIX + KEY) is None
    assert "lapsed" not in caplog.text
    assert "lost" not in caplog.text
