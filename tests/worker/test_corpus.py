"""Every kind of photo people send, through the real API and workers; and what is no photo.

Good files are accepted and their jobs succeed end to end; bad ones are a 4xx
with an error code. Zero 5xx, zero internal_error results. The table of what
happened is written to the test artifacts (corpus.md).
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

from shared.output import SRGB_ICC
from tests.corpus import corpus
from tests.helpers import submit, wait_all_finished, wait_finished

pytestmark = pytest.mark.e2e

#: The corpus's 18 fresh cutouts one after another: 379 s on the slowest of our 2-core
#: machines, where a forward takes 12 to 22 s beside the other test processes; the
#: suite's 600 s per test would leave it too little room.
CORPUS_TIMEOUT_S = 1200


@pytest.mark.timeout(CORPUS_TIMEOUT_S)
def test_every_photo_kind_is_taken_and_every_non_photo_refused(e2e_client, artifacts_dir):
    rows = []
    jobs: dict[str, str] = {}
    for case in corpus():
        response = submit(e2e_client, case.data, filename="upload", effects="color")
        body = response.get_json()
        assert response.status_code < 500, (case.name, body)
        if case.refusal is None:
            assert response.status_code == 202, (case.name, body)
            jobs[case.name] = body["id"]
        else:
            assert (response.status_code, body["error"]["code"]) == case.refusal, case.name
            rows.append((case.name, f"{response.status_code} {body['error']['code']}", "—"))
    for name, job in zip(jobs, wait_all_finished(e2e_client, list(jobs.values())), strict=True):
        errors = [r["error"]["code"] for r in job["results"].values() if r.get("error")]
        assert "internal_error" not in errors, (name, job)
        assert job["status"] == "succeeded", (name, job)
        rows.append((name, "202", job["status"]))
    table = "| file | answer | job |\n|---|---|---|\n" + "\n".join(
        f"| {name} | {answer} | {status} |" for name, answer, status in sorted(rows)
    )
    (artifacts_dir / "corpus.md").write_text(table + "\n")


def test_results_carry_no_exif_gps_or_xmp_from_the_upload(e2e_client):
    (case,) = [c for c in corpus() if c.name == "JPEG with EXIF, GPS and XMP"]
    job = wait_finished(e2e_client, submit(e2e_client, case.data, effects="color").get_json()["id"])
    assert job["status"] == "succeeded", job["results"]["cutout"]
    assert (job["input"]["width"], job["input"]["height"]) == (72, 96), "EXIF orientation 6"
    for name, result in job["results"].items():
        data = e2e_client.get(result["url"]).data
        image = Image.open(io.BytesIO(data))
        assert not image.getexif(), name
        assert "xmp" not in image.info, name
        assert b"PhoneMaker" not in data, name
        assert b"home</x:xmpmeta>" not in data, name
        assert image.info.get("icc_profile") == SRGB_ICC, name
