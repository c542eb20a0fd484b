"""The worker's consumer through a broker outage, on a redis-server of the test's own:
Celery's consumer dies when the lost connection holds an unacknowledged message (a
kombu close-after-collect bug); ours reconnects, and the message waits in the unacked
index for the visibility sweep."""

from __future__ import annotations

import pytest
import redis
from celery import Celery
from celery.worker.consumer import Consumer
from kombu.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError

from shared.queues import QUEUE_GPU, celery_config
from shared.settings import Settings
from tests.conftest import preferred_port
from tests.faults import RedisServer, running
from worker.consumer import OutageProofConsumer

BROKER_PORT = preferred_port(6396)


@pytest.fixture
def broker(tmp_path):
    with running(RedisServer(tmp_path / "redis", BROKER_PORT)) as server:
        yield server


def consumer_holding_a_delivered_message(kind: type[Consumer], broker: RedisServer) -> Consumer:
    """A consumer whose connection took a message it never acknowledged; then the broker
    goes away, as it does when a task's ack cannot reach a stopped Redis."""
    app = Celery("consumer-test")
    app.conf.update(celery_config(Settings(redis_url=broker.url)))
    connection = Connection(
        broker.url, transport_options=app.conf.broker_transport_options
    ).ensure_connection()
    channel = connection.default_channel
    queue = connection.SimpleQueue(QUEUE_GPU, channel=channel)
    queue.put({"task": "a photo"})
    assert queue.get(timeout=5).payload == {"task": "a photo"}  # delivered, not acked
    broker.stop()
    # Only what on_connection_error_after_connected reads: the app and the connection.
    consumer: Consumer = object.__new__(kind)
    consumer.app = app
    consumer.connection = connection
    return consumer


def test_celerys_own_consumer_dies_on_this_outage(broker):
    """If this starts to pass without the error, kombu fixed it: drop worker/consumer.py."""
    consumer = consumer_holding_a_delivered_message(Consumer, broker)
    with pytest.raises(AttributeError):
        consumer.on_connection_error_after_connected(RedisConnectionError("gone"))


def test_ours_lets_go_of_the_connection_and_the_message_waits_for_the_sweep(broker):
    consumer = consumer_holding_a_delivered_message(OutageProofConsumer, broker)
    consumer.on_connection_error_after_connected(RedisConnectionError("gone"))
    assert consumer.connection is None  # Celery's restart then connects afresh
    broker.start()
    client = redis.Redis(port=broker.port)
    assert client.hlen("unacked") == 1, "the message is kept for the visibility sweep"
    assert client.zcard("unacked_index") == 1
