"""POST/DELETE /v1/jobs/<id>/keep: what a customer ordered outlives the TTL and the sweep.

The unit tests build a finished job through the job store (as a worker would) on their
own Redis database and storage folder, so the sweep past the TTL touches nothing of the
other tests; the end-to-end test keeps a job real workers made.
"""

from __future__ import annotations

import time

import pytest

from api import create_app
from api.middleware import key_id_of
from shared.errors import TransientStorageError
from shared.jobs.model import JobRequest, ResultRecord, StoredObject, new_job_id
from shared.jobs.store import job_key
from shared.output import OutputFormat
from shared.storage import KEPT_PREFIX
from tests.api.keys import KEY_A, KEY_B, bearer
from tests.helpers import sample_variant, submit, wait_finished

EFFECTS = ("color", "popart")
PAYLOADS = {"cutout": b"cutout-bytes", "color": b"color-bytes", "popart": b"popart-bytes"}


@pytest.fixture
def production_app(production):
    return create_app({"TESTING": True, "CUTFX_SETTINGS": production})


@pytest.fixture
def api(production_app):
    return production_app.test_client()


def services_of(app):
    from api.middleware import SERVICES_EXTENSION

    return app.extensions[SERVICES_EXTENSION]


def finished_job(app, key: str = KEY_A, finish: tuple[str, ...] = ("cutout", *EFFECTS)) -> str:
    """A job of `key` whose results in `finish` were made and stored, as workers do."""
    svc = services_of(app)
    from shared.jobs.model import Owner

    request = JobRequest(
        input_sha256="ab" * 32,
        input_key="inputs/ab/photo.png",
        width=10,
        height=8,
        effects=EFFECTS,
        primary="color",
        output=OutputFormat(name="webp"),
        params={name: {} for name in EFFECTS},
    )
    job_id = new_job_id()
    svc.jobs.create(job_id, request, owner=Owner(key_id=key_id_of(key)))
    for name in finish:
        key_name = f"results/{job_id}/{name}.webp"
        svc.storage.put(key_name, PAYLOADS[name], "image/webp")
        stored = StoredObject(key_name, "image/webp", len(PAYLOADS[name]), 10, 8)
        svc.jobs.succeed_result(job_id, ResultRecord(name=name), stored, cached=False)
    return job_id


def download(client, url: str):
    return client.get(url.removeprefix("http://localhost"))


def test_kept_results_survive_the_sweep_past_the_ttl_and_the_others_do_not(
    production_app, api, production
):
    job_id = finished_job(production_app)
    before = api.get(f"/v1/jobs/{job_id}", headers=bearer(KEY_A)).get_json()
    assert before["kept"] is False
    answer = api.post(
        f"/v1/jobs/{job_id}/keep", json={"results": ["cutout", "color"]}, headers=bearer(KEY_A)
    )
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["kept"] is True
    assert set(name for name, r in body["results"].items() if "kept" in r) == {"cutout", "color"}
    kept_url = body["results"]["color"]["kept"]["url"]
    assert body["results"]["color"]["kept"]["bytes"] == len(PAYLOADS["color"])
    # Idempotent: the same answer, nothing copied twice.
    again = api.post(
        f"/v1/jobs/{job_id}/keep", json={"results": ["color"]}, headers=bearer(KEY_A)
    ).get_json()
    assert set(n for n, r in again["results"].items() if "kept" in r) == {"cutout", "color"}

    svc = services_of(production_app)
    assert svc.redis.ttl(job_key(job_id)) == -1, "the kept job's record outlives the TTL"
    swept = svc.storage.unwrapped().delete_older_than(
        production.result_ttl_s, now=time.time() + production.result_ttl_s + 60
    )
    assert swept >= 3, "the job's own results were past the TTL"
    kept_file = download(api, kept_url)
    assert kept_file.status_code == 200
    assert kept_file.data == PAYLOADS["color"]
    assert kept_file.mimetype == "image/webp"
    for name in ("color", "popart"):
        gone = download(api, body["results"][name]["url"])
        assert gone.status_code == 404, f"{name}'s own file should be swept"
    # Read again after the sweep: fresh signed URLs of the kept copies.
    later = api.get(f"/v1/jobs/{job_id}", headers=bearer(KEY_A)).get_json()
    assert download(api, later["results"]["cutout"]["kept"]["url"]).data == PAYLOADS["cutout"]


def test_release_deletes_the_copies_and_lets_the_job_expire(production_app, api, production):
    job_id = finished_job(production_app)
    kept = api.post(f"/v1/jobs/{job_id}/keep", headers=bearer(KEY_A)).get_json()
    assert {n for n, r in kept["results"].items() if "kept" in r} == {"cutout", *EFFECTS}
    url = kept["results"]["popart"]["kept"]["url"]
    released = api.delete(f"/v1/jobs/{job_id}/keep", headers=bearer(KEY_A))
    assert released.status_code == 200
    assert released.get_json()["kept"] is False
    assert download(api, url).status_code == 404
    svc = services_of(production_app)
    assert 0 < svc.redis.ttl(job_key(job_id)) <= production.result_ttl_s
    kept_folder = svc.storage.unwrapped().root / KEPT_PREFIX / job_id
    assert not kept_folder.exists() or not any(kept_folder.iterdir())


def test_a_storage_fault_during_keep_marks_nothing_kept_and_a_retry_keeps_all(
    production_app, api, monkeypatch
):
    job_id = finished_job(production_app)
    svc = services_of(production_app)
    real_put = svc.kept_storage.put
    calls = []

    def failing_second(key: str, data: bytes, content_type: str) -> None:
        calls.append(key)
        if len(calls) == 2:
            raise TransientStorageError("the bucket is away")
        real_put(key, data, content_type)

    monkeypatch.setattr(svc.kept_storage, "put", failing_second)
    answer = api.post(f"/v1/jobs/{job_id}/keep", headers=bearer(KEY_A))
    assert answer.status_code == 503
    assert answer.get_json()["error"]["code"] == "storage_unavailable"
    job = api.get(f"/v1/jobs/{job_id}", headers=bearer(KEY_A)).get_json()
    assert job["kept"] is False
    assert not any("kept" in r for r in job["results"].values())
    root = svc.storage.unwrapped().root / KEPT_PREFIX / job_id
    assert not root.exists() or not any(root.iterdir()), "the first copy was removed again"
    assert svc.redis.ttl(job_key(job_id)) > 0

    monkeypatch.setattr(svc.kept_storage, "put", real_put)
    retried = api.post(f"/v1/jobs/{job_id}/keep", headers=bearer(KEY_A)).get_json()
    assert all("kept" in r for r in retried["results"].values())


def test_only_the_owner_keeps_and_only_what_is_finished(production_app, api):
    job_id = finished_job(production_app)
    other = api.post(f"/v1/jobs/{job_id}/keep", headers=bearer(KEY_B))
    assert other.status_code == 404
    assert other.get_json()["error"]["code"] == "job_not_found"
    assert api.delete(f"/v1/jobs/{job_id}/keep", headers=bearer(KEY_B)).status_code == 404
    assert api.post(f"/v1/jobs/{job_id}/keep").status_code == 401
    unknown = api.post(
        f"/v1/jobs/{job_id}/keep", json={"results": ["sepia"]}, headers=bearer(KEY_A)
    )
    assert unknown.status_code == 422
    assert unknown.get_json()["error"]["code"] == "invalid_parameter"
    unfinished = finished_job(production_app, finish=("cutout",))
    early = api.post(f"/v1/jobs/{unfinished}/keep", headers=bearer(KEY_A))
    assert early.status_code == 409
    assert early.get_json()["error"]["code"] == "job_unfinished"


@pytest.mark.e2e
def test_a_job_real_workers_made_is_kept_byte_for_byte(e2e_client):
    job_id = submit(e2e_client, sample_variant(), effects="color").get_json()["id"]
    done = wait_finished(e2e_client, job_id)
    original = e2e_client.get(done["results"]["color"]["url"].removeprefix("http://localhost"))
    kept = e2e_client.post(f"/v1/jobs/{job_id}/keep", data={"results": "color"}).get_json()
    copy = e2e_client.get(kept["results"]["color"]["kept"]["url"].removeprefix("http://localhost"))
    assert copy.status_code == 200
    assert copy.data == original.data
    assert "kept" not in kept["results"]["cutout"]


def test_the_python_client_keeps_releases_and_reads_usage(production_app):
    from werkzeug.serving import make_server

    from cli.client import CutfxClient
    from tests.helpers import serving

    job_id = finished_job(production_app)
    server = make_server("127.0.0.1", 0, production_app, threaded=True)
    with serving(server):
        client = CutfxClient(f"http://127.0.0.1:{server.server_port}", api_key=KEY_A)
        kept = client.keep(job_id, ["popart"])
        assert {n for n, r in kept["results"].items() if "kept" in r} == {"popart"}
        assert client.download(kept["results"]["popart"]["kept"]["url"]) == PAYLOADS["popart"]
        assert client.usage()["total"]["bytes_kept"] == len(PAYLOADS["popart"])
        assert client.release(job_id)["kept"] is False
