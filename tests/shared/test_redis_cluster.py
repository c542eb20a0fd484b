"""The job store, cache, limits and heartbeats on a real three-node Redis Cluster, with the
broker on a Redis of its own (CUTFX_STORE_URL apart from CUTFX_REDIS_URL): whole jobs
through the API and real workers, and each job's keys in one slot."""

from __future__ import annotations

import time

import pytest
import redis

from api import create_app
from shared.jobs import JobStore, new_job_id, read_events
from shared.jobs.model import JobStatus, ResultStatus
from shared.jobs.store import events_key, job_key, pending_key, webhook_cursor_key
from shared.redis_location import redis_client
from tests.conftest import make_settings, preferred_port
from tests.faults import FaultStack, RedisServer, running
from tests.helpers import sample_variant, submit, wait_finished
from tests.redis_topologies import LocalCluster
from tests.shared.test_jobstore import request

pytestmark = pytest.mark.e2e

CLUSTER_FIRST_PORT = preferred_port(7301)
BROKER_PORT = preferred_port(6393)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running(LocalCluster(tmp_path_factory.mktemp("cluster"), CLUSTER_FIRST_PORT)) as nodes:
        yield nodes


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with running(RedisServer(tmp_path_factory.mktemp("broker"), BROKER_PORT)) as server:
        yield server


@pytest.fixture(scope="module")
def cluster_settings(cluster, broker, tmp_path_factory, checkpoint):
    return make_settings(
        broker.url,
        tmp_path_factory.mktemp("storage"),
        store_url=cluster.url,
        model_ckpt=str(checkpoint),
    )


@pytest.fixture(scope="module")
def stack(cluster_settings, tmp_path_factory):
    running = FaultStack(cluster_settings, tmp_path_factory.mktemp("logs"), {})
    running.start_all()
    yield running
    running.stop_all()


@pytest.fixture(scope="module")
def api(stack, cluster_settings):
    return create_app({"TESTING": True, "CUTFX_SETTINGS": cluster_settings}).test_client()


def test_whole_jobs_run_with_the_job_store_on_a_cluster_and_nothing_of_it_on_the_broker(
    stack, api, cluster, broker
):
    first = submit(api, sample_variant(), effects="color,popart")
    assert first.status_code == 202, first.get_json()
    job_id = first.get_json()["id"]
    job = wait_finished(api, job_id)
    assert job["status"] == "succeeded", job
    assert set(job["results"]) == {"cutout", "color", "popart"}
    events = [str(e.type) for e in read_events(stack.client, job_id, "0-0", None)]
    assert events[0] == "job.accepted"
    assert events[-1] == "job.finished"
    assert events.count("result.succeeded") == 3

    # The same photo again is answered from the cache index on the cluster.
    again = submit(api, sample_variant(), effects="color")
    assert again.status_code in (200, 202)
    assert wait_finished(api, again.get_json()["id"])["status"] == "succeeded"

    # Nothing of the job store went to the broker's Redis: only Celery's keys are there.
    broker_keys = {key.decode() for key in redis.Redis(port=broker.port).scan_iter()}
    assert not [key for key in broker_keys if key.startswith("cutfx:")], broker_keys


def test_each_jobs_keys_share_one_slot_of_the_cluster(stack, api, cluster):
    answer = submit(api, sample_variant(), effects="dithering")
    job_id = answer.get_json()["id"]
    node = redis.Redis(port=cluster.nodes[0].port, decode_responses=True)
    slots = {
        node.execute_command("CLUSTER", "KEYSLOT", key)
        for key in (
            job_key(job_id),
            pending_key(job_id),
            events_key(job_id),
            webhook_cursor_key(job_id),
        )
    }
    assert len(slots) == 1
    # And the keys do spread over the nodes: jobs are not all pinned to one slot.
    other = submit(api, sample_variant(), effects="dithering").get_json()["id"]
    assert node.execute_command("CLUSTER", "KEYSLOT", job_key(other)) not in slots
    for each in (job_id, other):
        assert wait_finished(api, each)["status"] == "succeeded"


def test_cancel_and_deadlines_run_their_scripts_on_the_cluster(stack):
    store = JobStore(stack.client, ttl_s=600)
    job_id = new_job_id()
    store.create(job_id, request(), cancel_after_s=300)
    assert job_id in store.past_deadline(time.time() + 301, limit=100)
    assert store.cancel(job_id, "canceled by the client")
    job = store.get(job_id)
    assert job.status == JobStatus.CANCELED
    assert {r.status for r in job.results.values()} == {ResultStatus.CANCELED}
    types = [str(e.type) for e in read_events(stack.client, job_id, "0-0", None)]
    assert types.count("result.canceled") == 3
    assert types[-1] == "job.finished"
    assert job_id not in store.past_deadline(time.time() + 301, limit=100)


def test_metrics_and_readiness_read_the_cluster_and_the_broker(stack, api):
    assert api.get("/readyz").status_code == 200
    text = api.get("/metrics").get_data(as_text=True)
    assert "cutfx_jobs_accepted_total" in text
    assert 'cutfx_ready_workers{queue="gpu"} 1.0' in text
    assert 'cutfx_queue_depth{queue="gpu"}' in text


def test_a_cluster_store_url_is_the_store_only_never_the_broker(cluster):
    from shared.errors import ConfigurationError
    from shared.settings import Settings

    with pytest.raises((ValueError, ConfigurationError)):
        Settings(redis_url=cluster.url)
    client = redis_client(cluster.url, decode_responses=True)
    assert client.ping()
