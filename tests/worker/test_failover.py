"""A Redis primary dies mid-work and Sentinel promotes its replica: real processes on
loopback ports of their own (primary and replica with append-only files, three
sentinels), real workers and the API on a redis+sentinel:// URL. Every accepted job
finishes; during the switch the API answers 503 in the error shape, then recovers by
itself. The machine's Redis on 6379 is never touched."""

from __future__ import annotations

import time

import pytest

from api import create_app
from tests.conftest import make_settings, preferred_port
from tests.faults import FaultStack, job_of, running, submit_jobs, wait_for
from tests.helpers import sample_variant, submit, wait_all_finished
from tests.redis_topologies import SentinelGroup

pytestmark = pytest.mark.e2e

SENTINEL_FIRST_PORT = preferred_port(6401)
#: More jobs than the workers hold at once, so some are mid-task and some wait when the
#: primary dies.
JOBS_BEFORE = 6
JOBS_AFTER = 2
#: The least the settings allow (30 s by default): a task whose acknowledgement the
#: switch lost comes back a third as soon.
VISIBILITY_TIMEOUT_S = 10
#: Sentinel calls the primary down after 1 s of silence; the switch takes a few more.
SWITCH_BUDGET_S = 30
SUBMIT_EVERY_S = 0.5


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    with running(SentinelGroup(tmp_path_factory.mktemp("sentinel"), SENTINEL_FIRST_PORT)) as g:
        yield g


@pytest.fixture(scope="module")
def figures(artifacts_dir):
    """The failover's cost, written to the test artifacts (failover.md)."""
    lines: list[str] = []
    yield lines
    (artifacts_dir / "failover.md").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def failover_settings(group, tmp_path_factory, checkpoint):
    return make_settings(
        group.url,
        tmp_path_factory.mktemp("storage"),
        model_ckpt=str(checkpoint),
        visibility_timeout_s=VISIBILITY_TIMEOUT_S,
    )


@pytest.fixture(scope="module")
def stack(failover_settings, tmp_path_factory):
    running = FaultStack(failover_settings, tmp_path_factory.mktemp("logs"), {})
    running.start_all()
    yield running
    running.stop_all()


@pytest.fixture(scope="module")
def api(stack, failover_settings):
    return create_app({"TESTING": True, "CUTFX_SETTINGS": failover_settings}).test_client()


def ride_out_the_switch(api, job_id: str) -> tuple[float, list[str], int]:
    """Ask for `job_id` and submit now and then until the API answers again after its
    first 503: (seconds from the first 503 to the first answer after, jobs accepted
    meanwhile, submits refused)."""
    first_refusal: float | None = None
    accepted: list[str] = []
    refused = 0
    last_submit = 0.0
    deadline = time.monotonic() + SWITCH_BUDGET_S
    while time.monotonic() < deadline:
        answer = api.get(f"/v1/jobs/{job_id}")
        if answer.status_code == 503:
            assert answer.get_json()["error"]["code"] == "not_ready"
            first_refusal = first_refusal or time.monotonic()
        else:
            assert answer.status_code == 200, answer.get_json()
            if first_refusal is not None:
                return time.monotonic() - first_refusal, accepted, refused
        if time.monotonic() - last_submit >= SUBMIT_EVERY_S:
            last_submit = time.monotonic()
            submitted = submit(api, sample_variant(), effects="color")
            if submitted.status_code == 202:
                accepted.append(submitted.get_json()["id"])
            else:
                assert submitted.status_code == 503, submitted.get_json()
                assert "error" in submitted.get_json()
                refused += 1
        time.sleep(0.05)
    raise TimeoutError(f"the API did not come back within {SWITCH_BUDGET_S} s")


def test_a_killed_primary_fails_over_and_every_accepted_job_finishes(group, stack, api, figures):
    job_ids = submit_jobs(api, JOBS_BEFORE, effects="color")
    wait_for(
        lambda: any(job_of(api, job_id)["status"] == "running" for job_id in job_ids),
        120,
        "no job started",
    )
    old_primary = group.primary.port
    group.primary.kill()
    unavailable_s, accepted_meanwhile, refused = ride_out_the_switch(api, job_ids[0])
    assert group.primary_port() == group.replica.port != old_primary

    job_ids += accepted_meanwhile
    job_ids += submit_jobs(api, JOBS_AFTER, effects="color")
    jobs = wait_all_finished(api, job_ids, 300)
    succeeded = sum(job["status"] == "succeeded" for job in jobs)
    figures.append(
        f"Sentinel failover (primary SIGKILLed mid-jobs): API 503 for {unavailable_s:.1f} s, "
        f"{refused} submits refused meanwhile, {succeeded} of {len(job_ids)} accepted jobs "
        f"succeeded ({len(job_ids) - succeeded} lost)"
    )
    assert [job["status"] for job in jobs] == ["succeeded"] * len(job_ids)
    stack.wait_ready(("gpu", "cpu", "webhooks"))
