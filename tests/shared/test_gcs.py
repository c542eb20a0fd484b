"""The GCS backend against gcp-storage-emulator: object metadata and v4 signed URLs."""

from __future__ import annotations

import time
import urllib.parse
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
import requests

from shared.errors import ConfigurationError, ObjectNotFound, StorageError, TransientStorageError
from shared.gcs import (
    IMMUTABLE_CACHE_CONTROL,
    GcsStorage,
    IamSigner,
    KeySigner,
    _mapped_errors,
    _retry,
    choose_signer,
)
from shared.settings import Settings
from tests.conftest import preferred_port
from tests.gcs import BUCKET, SERVICE_ACCOUNT


@pytest.fixture
def gcs(gcs_environment):
    return GcsStorage.from_settings(Settings(storage="gcs", gcs_bucket=BUCKET, gcs_prefix="signed"))


def test_objects_carry_type_and_immutable_caching(gcs):
    gcs.put("results/ab/cat.webp", b"RIFFxxxxWEBP", "image/webp")
    blob = gcs.bucket.get_blob("signed/results/ab/cat.webp")
    assert blob.content_type == "image/webp"
    assert blob.cache_control == IMMUTABLE_CACHE_CONTROL


def test_v4_signed_url_form_and_download(gcs, gcs_environment):
    gcs.put("results/ab/cat.webp", b"RIFFxxxxWEBP", "image/webp")
    signed = gcs.signed_url("results/ab/cat.webp", 900)
    parts = urllib.parse.urlsplit(signed.url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    emulator = urllib.parse.urlsplit(gcs_environment["STORAGE_EMULATOR_HOST"])
    assert parts.netloc == emulator.netloc
    assert parts.path == f"/{BUCKET}/signed/results/ab/cat.webp"
    assert query["X-Goog-Algorithm"] == "GOOG4-RSA-SHA256"
    assert query["X-Goog-Credential"].startswith(SERVICE_ACCOUNT + "/")
    assert query["X-Goog-Credential"].endswith("/auto/storage/goog4_request")
    assert query["X-Goog-Expires"] == "900"
    assert query["X-Goog-SignedHeaders"] == "host"
    assert len(query["X-Goog-Signature"]) == 512, "an RSA-2048 signature in hex"
    assert abs(signed.expires_at - (time.time() + 900)) < 5
    response = requests.get(signed.url, timeout=10)
    assert response.status_code == 200
    assert response.content == b"RIFFxxxxWEBP"


def test_a_key_file_signs_locally():
    credentials = SimpleNamespace(signer=object(), signer_email=SERVICE_ACCOUNT)
    assert isinstance(choose_signer(credentials, "", lambda c: None), KeySigner)


def test_keyless_credentials_sign_through_iam_with_a_fresh_token():
    refreshed = []

    def refresh(credentials):
        refreshed.append(1)
        credentials.token = f"token-{len(refreshed)}"
        credentials.expiry = datetime.now(UTC) + timedelta(hours=1)

    credentials = SimpleNamespace(token=None, expiry=None, service_account_email="default")
    signer = choose_signer(credentials, "runner@project.iam.gserviceaccount.com", refresh)
    assert isinstance(signer, IamSigner)
    arguments = signer.signing_arguments()
    assert arguments == {
        "service_account_email": "runner@project.iam.gserviceaccount.com",
        "access_token": "token-1",
    }
    signer.signing_arguments()
    assert len(refreshed) == 1, "a valid token is reused"


def test_no_key_and_no_email_is_a_clear_start_up_error():
    credentials = SimpleNamespace(token=None, service_account_email="default")
    with pytest.raises(ConfigurationError, match="CUTFX_GCS_SIGNER_EMAIL"):
        choose_signer(credentials, "", lambda c: None)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ("ServiceUnavailable", TransientStorageError),
        ("TooManyRequests", TransientStorageError),
        ("InternalServerError", TransientStorageError),
        ("Forbidden", StorageError),
        ("BadRequest", StorageError),
        ("NotFound", ObjectNotFound),
    ],
)
def test_errors_are_mapped_and_only_transient_ones_retried(error, expected):
    from google.api_core import exceptions

    raised = getattr(exceptions, error)("boom")
    with pytest.raises(expected) as caught, _mapped_errors("results/x.png"):
        raise raised
    assert type(caught.value) is expected
    assert _retry()._predicate(raised) is (expected is TransientStorageError)


def test_the_lifecycle_command_sets_a_delete_rule_for_the_prefix(
    gcs_environment, monkeypatch, capsys
):
    from cli.main import main

    monkeypatch.setenv("CUTFX_STORAGE", "gcs")
    monkeypatch.setenv("CUTFX_GCS_BUCKET", BUCKET)
    monkeypatch.setenv("CUTFX_GCS_PREFIX", "cutfx")
    monkeypatch.setenv("CUTFX_RESULT_TTL_S", str(3 * 86400 + 1))
    assert main(["gcs-lifecycle"]) == 0
    assert "4 days" in capsys.readouterr().out
    storage = GcsStorage.from_settings(Settings(storage="gcs", gcs_bucket=BUCKET))
    storage.bucket.reload()
    rules = list(storage.bucket.lifecycle_rules)
    assert {
        "action": {"type": "Delete"},
        "condition": {"age": 4, "matchesPrefix": ["cutfx/"]},
    } in rules


def test_the_cors_command_opens_signed_downloads_to_the_configured_origins(
    gcs_environment, monkeypatch, capsys
):
    from cli.main import main

    monkeypatch.setenv("CUTFX_STORAGE", "gcs")
    monkeypatch.setenv("CUTFX_GCS_BUCKET", BUCKET)
    monkeypatch.setenv("CUTFX_CORS_ORIGINS", "https://brand.example")
    monkeypatch.setenv("CUTFX_KEY_ORIGINS", '{"key_0123456789abcdef": ["https://shop.example"]}')
    assert main(["gcs-cors"]) == 0
    assert "https://brand.example, https://shop.example" in capsys.readouterr().out
    storage = GcsStorage.from_settings(Settings(storage="gcs", gcs_bucket=BUCKET))
    storage.bucket.reload()
    assert storage.bucket.cors == [
        {
            "origin": ["https://brand.example", "https://shop.example"],
            "method": ["GET", "HEAD"],
            "responseHeader": ["Content-Type", "Content-Length"],
            "maxAgeSeconds": 3600,
        }
    ]
    monkeypatch.delenv("CUTFX_CORS_ORIGINS")
    monkeypatch.delenv("CUTFX_KEY_ORIGINS")
    assert main(["gcs-cors"]) == 2, "no origins configured: nothing to open"


def test_an_emulator_outage_is_ridden_out_by_the_retries(tmp_path):
    """GCS away for a while: a write waits it out (google's retries inside, ours around)."""
    import threading

    from cli.stack import free_port
    from shared.storage import RetryingStorage
    from tests.gcs import EmulatorProcess, emulator, write_service_account_key

    running = EmulatorProcess(free_port(preferred_port(9161)))
    key = write_service_account_key(tmp_path / "sa.json")
    with emulator(running.port, key, running):
        settings = Settings(storage="gcs", gcs_bucket=BUCKET, gcs_prefix="outage")
        storage = RetryingStorage(GcsStorage.from_settings(settings), budget_s=30)
        running.stop()
        back = threading.Timer(3, running.start)
        back.start()
        started = time.monotonic()
        storage.put("results/ab/outage.webp", b"RIFF....WEBP", "image/webp")
        back.join()
        assert time.monotonic() - started >= 2.5, "the write waited for GCS to come back"
        assert storage.get("results/ab/outage.webp") == b"RIFF....WEBP"


def test_kept_results_land_where_the_lifecycle_rule_does_not_reach(gcs_environment):
    settings = Settings(
        storage="gcs", gcs_bucket=BUCKET, gcs_prefix="cutfx", keep_storage_class="NEARLINE"
    )
    kept = GcsStorage.for_kept(settings)
    kept.put("kept/job1/color.webp", b"RIFFxxxxWEBP", "image/webp")
    blob = kept.bucket.get_blob("cutfx-kept/kept/job1/color.webp")
    assert blob is not None
    assert not blob.name.startswith("cutfx/"), "the rule deletes under cutfx/ only"
    assert kept.storage_class == "NEARLINE"
    assert requests.get(kept.signed_url("kept/job1/color.webp", 60).url, timeout=10).content == (
        b"RIFFxxxxWEBP"
    )
    kept.delete("kept/job1/color.webp")
    kept.delete("kept/job1/color.webp")  # a second delete finds nothing, and says nothing
    assert kept.bucket.get_blob("cutfx-kept/kept/job1/color.webp") is None
    own_bucket = GcsStorage.for_kept(settings.with_overrides(keep_bucket="orders"))
    assert (own_bucket.bucket.name, own_bucket.prefix) == ("orders", "cutfx")
