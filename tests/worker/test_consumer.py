"""The worker's consumer through a broker outage, on a redis-server of the test's own:
Celery's consumer dies when the lost connection holds an unacknowledged message (a
kombu close-after-collect bug); ours reconnects, and the message waits in the unacked
index for the visibility sweep. So does a task whose end comes back from the pool only
after that: Celery's request dies answering on the lost channel, ours lets it go."""

from __future__ import annotations

import pytest
import redis
from celery import Celery
from celery.worker.consumer import Consumer
from celery.worker.request import Request
from kombu.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError

from shared.queues import QUEUE_GPU, celery_config
from shared.settings import Settings
from tests.conftest import preferred_port
from tests.faults import RedisServer, running, wait_for
from worker.consumer import (
    OutageProofConsumer,
    OutageProofRequest,
    VisibilityKeeper,
    delivery_tag_of,
)

BROKER_PORT = preferred_port(6396)
TASK_NAME = "cutfx.test-task"


@pytest.fixture
def broker(tmp_path):
    with running(RedisServer(tmp_path / "redis", BROKER_PORT)) as server:
        yield server


def consumer_holding_a_delivered_message(kind: type[Consumer], broker: RedisServer) -> Consumer:
    """A consumer whose connection took a message it never acknowledged; then the broker
    goes away, as it does when a task's ack cannot reach a stopped Redis."""
    app, connection = broker_app(broker)
    queue = connection.SimpleQueue(QUEUE_GPU, channel=connection.default_channel)
    queue.put({"task": "a photo"})
    assert queue.get(timeout=5).payload == {"task": "a photo"}  # delivered, not acked
    broker.stop()
    return consumer_of(kind, app, connection)


def broker_app(broker: RedisServer) -> tuple[Celery, Connection]:
    """An app on the workers' settings, and its connection to `broker`."""
    app = Celery("consumer-test")
    app.conf.update(celery_config(Settings(redis_url=broker.url)))
    connection = Connection(
        broker.url, transport_options=app.conf.broker_transport_options
    ).ensure_connection()
    return app, connection


def consumer_of(kind: type[Consumer], app: Celery, connection: Connection) -> Consumer:
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


def a_task(photo: str) -> None:
    """The task the test's message names."""


def delivered_request(kind: type[Request], broker: RedisServer) -> Request:
    """The request of a task delivered just before the broker went away; our consumer let
    the lost connection go, reconnected, and only then the pool answers the task's end."""
    app, connection = broker_app(broker)
    app.task(name=TASK_NAME)(a_task)
    app.send_task(TASK_NAME, args=["a photo"], connection=connection, queue=QUEUE_GPU)
    queue = connection.SimpleQueue(QUEUE_GPU, channel=connection.default_channel)
    message = queue.get(timeout=5)
    assert message.headers["task"] == TASK_NAME  # delivered, not acked
    broker.stop()
    consumer_of(OutageProofConsumer, app, connection).on_connection_error_after_connected(
        RedisConnectionError("gone")
    )
    # The crash's traceback (worker/consumer.py) goes through the channel creating its
    # connection pool anew: in the worker the pool had been released too, which the
    # collect above leaves in place. Released here as it was there.
    message.channel._disconnect_pools()
    broker.start()
    return kind(
        message,
        app=app,
        on_ack=message.ack_log_error,
        on_reject=message.reject_log_error,
        connection_errors=connection.connection_errors,
    )


def test_celerys_own_request_dies_answering_on_the_lost_channel(broker):
    """If this starts to pass without the error, kombu fixed it: drop OutageProofRequest."""
    request = delivered_request(Request, broker)
    with pytest.raises(AttributeError):
        request.reject(requeue=True)


@pytest.mark.parametrize("answer", ["acknowledge", "reject"])
def test_ours_leaves_the_message_to_the_sweep(broker, answer):
    request = delivered_request(OutageProofRequest, broker)
    if answer == "reject":
        request.reject(requeue=True)
    else:
        request.acknowledge()
    assert request.acknowledged, "answered once: nothing tries the lost channel again"
    client = redis.Redis(port=broker.port)
    assert client.hlen("unacked") == 1, "the message is kept for the visibility sweep"
    assert client.zcard("unacked_index") == 1
    assert client.llen(QUEUE_GPU) == 0, "not handed out twice at once"


def test_every_task_of_ours_answers_through_ours():
    from worker.tasks import apply_effect, deliver_webhooks, segment

    for task in (segment, apply_effect, deliver_webhooks):
        assert task.Request == "worker.consumer:OutageProofRequest"


def test_a_running_task_names_the_message_the_visibility_keeper_refreshes(broker):
    """The tag a task's request gives is the member of the broker's unacked index that
    the sweep hands out again, and the keeper refreshes that member."""
    app, connection = broker_app(broker)
    task = app.task(name=TASK_NAME)(a_task)
    app.send_task(TASK_NAME, args=["a photo"], connection=connection, queue=QUEUE_GPU)
    message = connection.SimpleQueue(QUEUE_GPU, channel=connection.default_channel).get(timeout=5)
    request = Request(message, app=app)
    client = redis.Redis(port=broker.port, decode_responses=True)
    delivered_at = client.zscore("unacked_index", message.delivery_tag)
    assert delivered_at is not None

    # What Celery's tracer gives the task while it runs (celery/app/trace.py).
    task.push_request(request.request_dict, args=["a photo"], called_directly=False)
    try:
        tag = delivery_tag_of(task)
    finally:
        task.pop_request()

    assert tag == message.delivery_tag
    keeper = VisibilityKeeper(client, interval_s=60)
    keeper.hold(message.delivery_tag)
    keeper.refresh()
    refreshed_at = client.zscore("unacked_index", message.delivery_tag)
    assert refreshed_at is not None
    assert refreshed_at > delivered_at


def test_the_keeper_refreshes_held_tags_on_its_own_and_leaves_released_ones(broker):
    """The keeper's thread, started by the first hold, raises a held tag's score each
    interval; a released tag keeps the score it had, for the sweep to judge."""
    client = redis.Redis(port=broker.port, decode_responses=True)
    client.zadd("unacked_index", {"running": 1.0, "finished": 1.0, "never-held": 1.0})
    keeper = VisibilityKeeper(client, interval_s=0.1)
    keeper.hold("running")
    keeper.hold("finished")
    keeper.release("finished")
    try:
        wait_for(
            lambda: (client.zscore("unacked_index", "running") or 0) > 1.0,
            10,
            "the held tag was never refreshed",
        )
    finally:
        keeper.stop()
        keeper.join()
    assert client.zscore("unacked_index", "finished") == 1.0
    assert client.zscore("unacked_index", "never-held") == 1.0
