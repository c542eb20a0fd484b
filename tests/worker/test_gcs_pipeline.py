"""A whole job with CUTFX_STORAGE=gcs: workers write to the emulator, clients get signed URLs."""

from __future__ import annotations

import pytest
import requests

from tests.conftest import make_settings, redis_url_for, running_workers
from tests.gcs import BUCKET
from tests.helpers import decode, sample_variant, submit, wait_finished

pytestmark = pytest.mark.e2e

GCS_REDIS_URL = redis_url_for("CUTFX_TEST_STACK_REDIS_URL")


@pytest.fixture(scope="module")
def gcs_settings(checkpoint, gcs_environment, tmp_path_factory):
    return make_settings(
        GCS_REDIS_URL,
        tmp_path_factory.mktemp("unused-local"),
        model_ckpt=str(checkpoint),
        storage="gcs",
        gcs_bucket=BUCKET,
        gcs_prefix="pipeline",
    )


@pytest.fixture(scope="module")
def gcs_client(gcs_settings, gcs_environment, tmp_path_factory):
    from api import create_app

    with running_workers(gcs_settings, tmp_path_factory.mktemp("gcs-worker-logs"), gcs_environment):
        yield create_app({"TESTING": True, "CUTFX_SETTINGS": gcs_settings}).test_client()


def test_a_job_ends_with_results_downloadable_from_gcs(gcs_client, gcs_environment):
    body = submit(gcs_client, sample_variant(), effects="color,popart").get_json()
    job = wait_finished(gcs_client, body["id"])
    assert job["status"] == "succeeded"
    for name, result in job["results"].items():
        assert result["url"].startswith(
            f"{gcs_environment['STORAGE_EMULATOR_HOST']}/{BUCKET}/pipeline/"
        )
        assert "X-Goog-Signature=" in result["url"]
        response = requests.get(result["url"], timeout=10)
        assert response.status_code == 200, name
        assert decode(response.content).size == (451, 300)
    assert gcs_client.get("/v1/files/anything?expires=1&sig=x").status_code == 404
