"""What the producer sends: ids and names only, the primary effect first and foremost."""

from __future__ import annotations

import time

import pytest
from kombu.connection import Connection
from kombu.transport.redis import Mutex

from shared.jobs.model import BATCH
from shared.jobs.plan import enqueue_effects, enqueue_segment, segment_priority
from shared.queues import (
    PRIORITY_BATCH,
    PRIORITY_OTHER,
    PRIORITY_PRIMARY,
    PRIORITY_STEPS,
    QUEUE_CPU,
    QUEUED_AT_HEADER,
    TASK_APPLY_EFFECT,
    UNACKED_MUTEX_EXPIRE_S,
    celery_config,
)
from shared.settings import Settings
from tests.conftest import UNIT_REDIS_URL


class RecordingCelery:
    def __init__(self) -> None:
        self.sent: list[tuple[str, list[str], str, int]] = []
        self.headers: list[dict[str, float]] = []

    def send_task(self, name, args, queue, priority, headers):
        self.sent.append((name, args, queue, priority))
        self.headers.append(headers)


def test_the_primary_effect_is_sent_first_at_the_highest_priority():
    celery = RecordingCelery()
    enqueue_effects(celery, "job1", ["popart", "color", "dithering"], primary="popart")
    assert celery.sent == [
        (TASK_APPLY_EFFECT, ["job1", "popart"], QUEUE_CPU, PRIORITY_PRIMARY),
        (TASK_APPLY_EFFECT, ["job1", "color"], QUEUE_CPU, PRIORITY_OTHER),
        (TASK_APPLY_EFFECT, ["job1", "dithering"], QUEUE_CPU, PRIORITY_OTHER),
    ]
    assert PRIORITY_PRIMARY < PRIORITY_OTHER, "Redis transport: lower number is served first"
    # Each message says when it was queued (the queue-wait span, the oldest task's age).
    assert all(abs(h[QUEUED_AT_HEADER] - time.time()) < 60 for h in celery.headers)


def test_the_broker_sweeps_unacked_messages_with_a_short_lived_lock(redis_client):
    """A sweeper cut off mid-sweep (Redis restarted, primary failed over) leaves its lock
    behind; it must lapse well inside the visibility promise, not after kombu's 5 min."""
    settings = Settings(redis_url=UNIT_REDIS_URL)
    with Connection(
        UNIT_REDIS_URL, transport_options=celery_config(settings)["broker_transport_options"]
    ) as connection:
        channel = connection.default_channel
        assert channel.unacked_mutex_expire == UNACKED_MUTEX_EXPIRE_S
        with Mutex(channel.client, channel.unacked_mutex_key, channel.unacked_mutex_expire):
            ttl_ms = redis_client.pttl(channel.unacked_mutex_key)
    assert 0 < ttl_ms <= UNACKED_MUTEX_EXPIRE_S * 1000
    assert settings.visibility_timeout_s > UNACKED_MUTEX_EXPIRE_S


def test_a_sentinel_url_gives_celery_its_sentinels_and_the_primarys_name():
    settings = Settings(redis_url="redis+sentinel://:secret@s0:26379,s1:26380/cutfx/2")
    config = celery_config(settings)
    assert config["broker_url"] == "sentinel://:secret@s0:26379/2;sentinel://:secret@s1:26380/2"
    options = config["broker_transport_options"]
    assert options["master_name"] == "cutfx"
    assert options["visibility_timeout"] == settings.visibility_timeout_s


def test_a_batch_job_s_tasks_wait_in_the_lowest_list_of_each_queue():
    celery = RecordingCelery()
    enqueue_segment(celery, "job1", lane=BATCH)
    enqueue_effects(celery, "job1", ["popart", "color"], primary="popart", lane=BATCH)
    assert [priority for *_, priority in celery.sent] == [PRIORITY_BATCH] * 3
    assert max(PRIORITY_STEPS) == PRIORITY_BATCH, "a list of its own, read last"


@pytest.mark.parametrize(
    ("lane", "rank", "priority"),
    [("interactive", 1, 0), ("interactive", 2, 3), ("interactive", 7, 6), ("batch", 1, 9)],
)
def test_a_cutout_waits_by_its_lane_then_its_rank_among_its_key_s_jobs(lane, rank, priority):
    assert segment_priority(lane, rank) == priority
