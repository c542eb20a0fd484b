"""`cutfx batch` against a real API and workers: good and bad files, stop and resume."""

from __future__ import annotations

import json

import pytest

from cli.main import main
from shared.telemetry import TASKS, Metrics
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
