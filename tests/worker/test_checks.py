"""The checks on a cutout: crafted masks and photos that must trigger each, and ones that
must not; then the whole path through real workers (the mask fed through the model's
seam in tests/plugins.py, since the generated checkpoint's masks mean nothing)."""

from __future__ import annotations

import io
from dataclasses import replace

import cv2
import numpy as np
import pytest
import redis
from PIL import Image

from api import create_app
from shared.jobs import read_events
from shared.jobs.model import (
    BLURRY,
    LOW_CONFIDENCE,
    NO_SUBJECT,
    SEVERAL_SUBJECTS,
    SMALL_SUBJECT,
    SUBJECT_CUT_OFF,
    JobRequest,
    cutout_checks,
)
from shared.output import OutputFormat
from shared.settings import CheckThresholds, Settings, check_thresholds
from shared.telemetry import MODEL_INFERENCES, Metrics
from tests.conftest import make_settings, redis_url_for, running_workers
from tests.helpers import sample_variant, submit, wait_finished
from tests.plugins import NO_SUBJECT_COLOUR, UNSURE_COLOUR
from worker.render import subject_facts

#: The database of a module's own workers (tests/conftest.py).
ESCALATION_REDIS_URL = redis_url_for("CUTFX_TEST_STACK_REDIS_URL")
SIZE = (600, 800)  # height, width: a phone photo's proportions, small
LIMITS = CheckThresholds()


def request(width: int = SIZE[1], height: int = SIZE[0]) -> JobRequest:
    return JobRequest(
        input_sha256="ab" * 32,
        input_key="inputs/ab/x.png",
        width=width,
        height=height,
        effects=("color",),
        primary="color",
        output=OutputFormat(),
        params={"color": {}},
    )


def textured_photo(seed: int = 0) -> np.ndarray:
    """Fur-like detail everywhere: sharp by any measure."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)


def disc(centre: tuple[int, int], radius: int, size: tuple[int, int] = SIZE) -> np.ndarray:
    alpha = np.zeros(size, np.uint8)
    cv2.circle(alpha, (centre[1], centre[0]), radius, 255, -1)
    return alpha


def codes(alpha: np.ndarray, photo: np.ndarray | None = None, req: JobRequest | None = None):
    facts = subject_facts(alpha, textured_photo() if photo is None else photo)
    return {check["code"] for check in cutout_checks(facts, req or request(), LIMITS)}


CENTRED = disc((300, 400), 200)


def test_a_clear_centred_subject_passes_every_check():
    assert codes(CENTRED) == set()


def test_no_subject():
    assert codes(np.zeros(SIZE, np.uint8)) == {NO_SUBJECT}
    assert codes(disc((300, 400), 8)) == {NO_SUBJECT}, "a speck is no subject"
    assert NO_SUBJECT not in codes(CENTRED)


def test_a_subject_cut_off_names_the_sides():
    facts = subject_facts(disc((300, 0), 250), textured_photo())
    (check,) = [c for c in cutout_checks(facts, request(), LIMITS) if c["code"] == SUBJECT_CUT_OFF]
    assert "left" in check["message"]
    assert "right" not in check["message"]
    assert check["value"] > check["threshold"]
    touching = disc((300, 400), 200)
    touching[599, 395:405] = 255  # a paw's few pixels on the bottom edge
    assert SUBJECT_CUT_OFF not in codes(touching)


def test_several_subjects():
    two = disc((300, 200), 120) | disc((300, 600), 120)
    assert SEVERAL_SUBJECTS in codes(two)
    specks = CENTRED.copy()
    specks[10:14, 10:14] = 255  # a stray speck is not a second subject
    assert SEVERAL_SUBJECTS not in codes(specks)


def test_a_small_subject_in_the_upload():
    assert SMALL_SUBJECT in codes(disc((300, 400), 100))
    assert SMALL_SUBJECT not in codes(CENTRED)
    # The same mask, from an upload four times as large: big enough.
    large_upload = replace(request(), source_width=3200, source_height=2400)
    assert SMALL_SUBJECT not in codes(disc((300, 400), 100), req=large_upload)


def test_low_confidence_away_from_the_edge_only():
    unsure = CENTRED.copy()
    unsure[200:400, 300:500] = 128  # the middle of the subject half transparent
    assert LOW_CONFIDENCE in codes(unsure)
    soft_edge = cv2.GaussianBlur(CENTRED, (0, 0), 1.0)  # fur: soft only along the outline
    assert LOW_CONFIDENCE not in codes(soft_edge)


def test_blurry():
    sharp = np.asarray(Image.open("samples/chelsea.png").convert("RGB").resize(SIZE[::-1]))
    assert BLURRY not in codes(CENTRED, sharp)
    assert BLURRY in codes(CENTRED, cv2.GaussianBlur(sharp, (0, 0), 3))


def test_thresholds_come_from_the_settings():
    limits = check_thresholds(Settings(check_min_coverage=0.5, check_min_subject_px=10))
    facts = subject_facts(CENTRED, textured_photo())
    found = {c["code"]: c for c in cutout_checks(facts, request(), limits)}
    assert set(found) == {NO_SUBJECT}
    assert found[NO_SUBJECT]["threshold"] == 0.5


def test_a_cutout_measured_before_the_checks_is_judged_on_what_it_has():
    old_facts = {"x": 200, "y": 100, "width": 400, "height": 400, "coverage": 0.2}
    assert cutout_checks(old_facts, request(), LIMITS) == []
    assert cutout_checks(None, request(), LIMITS) == []


# --- through the real API and workers ----------------------------------------------------


def no_subject_photo() -> bytes:
    """A photo the model seam answers with an empty mask (tests/plugins.py)."""
    buffer = io.BytesIO()
    Image.new("RGB", (120, 90), NO_SUBJECT_COLOUR).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.e2e
def test_checks_warn_in_the_job_and_its_events(e2e_client, e2e_settings):
    job_id = submit(e2e_client, no_subject_photo(), effects="color").get_json()["id"]
    job = wait_finished(e2e_client, job_id)
    assert job["status"] == "succeeded", "checks warn, they do not refuse"
    for name in ("cutout", "color"):
        (check,) = [c for c in job["results"][name]["checks"] if c["code"] == NO_SUBJECT]
        assert check["value"] < check["threshold"]
        assert check["message"]
    client = redis.Redis.from_url(e2e_settings.redis_url, decode_responses=True)
    announced = [
        event.data["result"]
        for event in read_events(client, job_id, "0-0", None)
        if event.type == "result.succeeded"
    ]
    assert all(NO_SUBJECT in {c["code"] for c in result["checks"]} for result in announced)
    again = submit(e2e_client, no_subject_photo(), effects="color").get_json()
    assert again["status"] == "succeeded", "from the cache, with its checks"
    assert NO_SUBJECT in {c["code"] for c in again["results"]["cutout"]["checks"]}


@pytest.mark.e2e
def test_strict_fails_a_cutout_without_a_subject(e2e_client):
    job_id = submit(e2e_client, no_subject_photo(), effects="color", strict="true").get_json()["id"]
    job = wait_finished(e2e_client, job_id)
    assert job["status"] == "failed"
    assert job["results"]["cutout"]["error"]["code"] == NO_SUBJECT
    assert job["results"]["color"]["status"] == "failed"


#: The results of the escalated job.
RESULTS = ("color", "popart")


def unsure_photo() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (160, 120), UNSURE_COLOUR).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.e2e
def test_a_fast_worker_escalates_an_unsure_cutout_to_base_mode(
    checkpoint, tmp_path, tmp_path_factory
):
    # The generated checkpoint serves both modes: one architecture, the input size differs.
    settings = make_settings(
        ESCALATION_REDIS_URL,
        tmp_path / "storage",
        model_ckpt=str(checkpoint),
        escalate=("low_confidence",),
        escalation_ckpt=str(checkpoint),
    )
    app = create_app({"TESTING": True, "CUTFX_SETTINGS": settings})
    api = app.test_client()
    metrics = Metrics(redis.Redis.from_url(ESCALATION_REDIS_URL, decode_responses=True))
    with running_workers(settings, tmp_path_factory.mktemp("escalation-logs"), {}):
        plain = wait_finished(api, submit(api, sample_variant(), effects="color").get_json()["id"])
        plain_inferences = metrics.counter_value(MODEL_INFERENCES)
        first = submit(api, unsure_photo(), effects=",".join(RESULTS)).get_json()
        job = wait_finished(api, first["id"], timeout_s=300)
        inferences = metrics.counter_value(MODEL_INFERENCES) - plain_inferences
        model_id = app.extensions["cutfx"].jobs.get(first["id"]).model_id
        repeat = wait_finished(api, submit(api, unsure_photo(), effects="color").get_json()["id"])
        repeat_inferences = metrics.counter_value(MODEL_INFERENCES) - plain_inferences
        images = {
            effect: api.get(job["results"][effect]["url"]).get_data()
            for effect in ("color", "popart")
        }

    assert "escalation" not in plain["results"]["cutout"], "a sure cutout is not run again"
    assert plain_inferences == 1
    assert job["status"] == "succeeded"
    cutout = job["results"]["cutout"]
    escalation = cutout["escalation"]
    assert escalation["mode"] == "base"
    assert escalation["chosen"] == "base"
    assert escalation["uncertain"]["base"] < escalation["uncertain"]["fast"]
    assert LOW_CONFIDENCE not in {c["code"] for c in cutout["checks"]}, "the final cutout's"
    assert inferences == 2, "one fast inference, one base"
    assert "-base-" in model_id
    for effect, data in images.items():
        # The effects start from the base cutout: fully opaque, no unsure middle.
        image = Image.open(io.BytesIO(data))
        assert np.asarray(image.convert("RGBA"))[..., 3].min() == 255, effect
    assert repeat["results"]["cutout"]["escalation"]["chosen"] == "base"
    assert repeat_inferences == 2, "the repeat found both cutouts in the cache"
