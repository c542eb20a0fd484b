"""`cutfx batch` against a real API and workers: good and bad files, stop and resume."""

from __future__ import annotations

import json

import pytest

from api import create_app
from cli.main import main
from shared.telemetry import TASKS, Metrics
from tests.api.test_image_url import PhotoServer
from tests.conftest import LiveServer
from tests.gcs import BUCKET
from tests.helpers import sample_variant

pytestmark = pytest.mark.e2e

RESULTS = {"cutout.webp", "color.webp", "enhancedblackwhite.webp", "popart.webp", "dithering.webp"}


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "catalogue"
    (folder / "cats").mkdir(parents=True)
    (folder / "tabby.png").write_bytes(sample_variant())
    (folder / "cats" / "ginger.png").write_bytes(sample_variant())
    (folder / "broken.jpg").write_bytes(b"this is no photo")
    (folder / "notes.txt").write_text("not an image name, ignored")
    return folder


def report_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def tasks_run(e2e_app) -> int:
    metrics = Metrics(e2e_app.extensions["cutfx"].redis)
    return sum(
        metrics.counter_value(TASKS, {"task": t}) for t in ("cutfx.segment", "cutfx.apply_effect")
    )


def run(server, photos, out, *extra):
    return main(
        [
            "batch",
            str(photos),
            "--out",
            str(out),
            "--api-url",
            server.url,
            "--concurrency",
            "2",
            *extra,
        ]
    )


def test_a_folder_with_good_and_bad_files(e2e_server, photos, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(e2e_server, photos, out) == 1, "a failed image makes a non-zero exit"
    captured = capsys.readouterr()
    assert "broken: rejected" in captured.err
    assert "2 of 3 images done" in captured.out
    for name in ("tabby", "cats/ginger"):
        assert {p.name for p in (out / name).iterdir() if not p.name.startswith(".")} == RESULTS
        assert (out / name / ".done").is_file()
    lines = {line["image"]: line for line in report_lines(out / "report.jsonl")}
    assert set(lines) == {"tabby", "cats/ginger", "broken"}
    assert lines["tabby"]["status"] == "succeeded"
    assert lines["tabby"]["job_id"]
    assert lines["tabby"]["timings"]["total_s"] >= lines["tabby"]["timings"]["first_result_s"]
    assert sorted(lines["tabby"]["files"]) == sorted(f"tabby/{name}" for name in RESULTS)
    assert lines["broken"]["status"] == "rejected"
    assert "415" in lines["broken"]["error"]


def test_a_stopped_run_resumes_and_skips_what_is_done(
    e2e_server, e2e_app, photos, tmp_path, capsys
):
    (photos / "broken.jpg").unlink()
    out = tmp_path / "out"
    assert run(e2e_server, photos, out) == 0
    first = {line["image"]: line for line in report_lines(out / "report.jsonl")}
    # As if stopped mid-download: one image lost its marker and a file.
    (out / "tabby" / ".done").unlink()
    (out / "tabby" / "popart.webp").unlink()
    before = tasks_run(e2e_app)
    assert run(e2e_server, photos, out) == 0
    second = report_lines(out / "report.jsonl")[len(first) :]
    statuses = {line["image"]: line["status"] for line in second}
    assert statuses == {"tabby": "succeeded", "cats/ginger": "skipped"}
    assert (out / "tabby" / "popart.webp").is_file()
    resumed = next(line for line in second if line["image"] == "tabby")
    assert resumed["job_id"] == first["tabby"]["job_id"], "the same job was followed, not redone"
    assert tasks_run(e2e_app) == before, "no work was done again"


def test_changed_options_are_not_skipped(e2e_server, photos, tmp_path):
    (photos / "broken.jpg").unlink()
    (photos / "cats" / "ginger.png").unlink()
    out = tmp_path / "out"
    assert run(e2e_server, photos, out, "--effects", "popart") == 0
    assert run(e2e_server, photos, out, "--effects", "popart", "--format", "png") == 0
    assert (out / "tabby" / "popart.png").is_file()
    assert [line["status"] for line in report_lines(out / "report.jsonl")] == [
        "succeeded",
        "succeeded",
    ]


# --- photos by address: a list of URLs, a CSV, a gs:// prefix -----------------------------


@pytest.fixture
def fetching_server(e2e_settings, workers):
    """The API on a loopback port, fetching from loopback (the test's photo server)."""
    app = create_app(
        {
            "TESTING": True,
            "CUTFX_SETTINGS": e2e_settings.with_overrides(
                fetch_allow_loopback=True, input_buckets=(BUCKET,)
            ),
        }
    )
    with LiveServer(app) as server:
        yield server


@pytest.fixture
def photo_server():
    server = PhotoServer()
    yield server
    server.shutdown()


def test_a_list_of_addresses_and_a_csv_of_them(fetching_server, photo_server, tmp_path, capsys):
    listing = tmp_path / "photos.txt"
    good, gone = photo_server.url("/unique?v=1"), photo_server.url("/missing")
    listing.write_text(f"# the shop's catalogue\n{good}\n\n{gone}\n")
    out = tmp_path / "out"
    assert run(fetching_server, listing, out, "--effects", "color") == 1
    lines = {line["source"]: line for line in report_lines(out / "report.jsonl")}
    assert set(lines) == {good, gone}, "each line names its address"
    assert lines[good]["status"] == "succeeded"
    assert (out / lines[good]["image"] / "color.webp").is_file()
    assert lines[gone]["status"] == "rejected"
    assert "fetch_failed" in lines[gone]["error"] or "422" in lines[gone]["error"]
    table = tmp_path / "photos.csv"
    table.write_text(f"name,url\nrex,{good}\n")
    assert run(fetching_server, table, out, "--effects", "color") == 0
    assert (out / "rex" / "color.webp").is_file()


def test_a_gs_prefix_is_read_by_the_service(fetching_server, gcs_environment, tmp_path):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    bucket = storage.Client(project="cutfx", credentials=AnonymousCredentials()).bucket(BUCKET)
    bucket.blob("catalogue/cats/tom.png").upload_from_string(sample_variant())
    bucket.blob("catalogue/notes.txt").upload_from_string(b"not a photo")
    out = tmp_path / "out"
    prefix = f"gs://{BUCKET}/catalogue"
    assert run(fetching_server, prefix, out, "--effects", "color") == 0
    (line,) = report_lines(out / "report.jsonl")
    assert line["source"] == f"gs://{BUCKET}/catalogue/cats/tom.png"
    assert line["image"] == "cats/tom"
    assert (out / "cats" / "tom" / "color.webp").is_file()
