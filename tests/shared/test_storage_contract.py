"""One contract every storage backend keeps."""

from __future__ import annotations

import time
import urllib.parse
import uuid

import pytest

from shared.errors import ObjectNotFound
from shared.storage import LocalStorage
from tests.gcs import BUCKET


@pytest.fixture(params=["local", "gcs"])
def storage(request, tmp_path):
    if request.param == "local":
        return LocalStorage(tmp_path / "objects", "secret")
    request.getfixturevalue("gcs_environment")
    from shared.gcs import GcsStorage
    from shared.settings import Settings

    settings = Settings(storage="gcs", gcs_bucket=BUCKET, gcs_prefix=f"t-{uuid.uuid4().hex[:8]}")
    return GcsStorage.from_settings(settings)


def test_put_get_exists(storage):
    assert not storage.exists("results/aa/one.webp")
    storage.put("results/aa/one.webp", b"first", "image/webp")
    assert storage.exists("results/aa/one.webp")
    assert storage.get("results/aa/one.webp") == b"first"


def test_put_replaces(storage):
    storage.put("results/aa/one.png", b"first", "image/png")
    storage.put("results/aa/one.png", b"second", "image/png")
    assert storage.get("results/aa/one.png") == b"second"


def test_missing_object(storage):
    with pytest.raises(ObjectNotFound):
        storage.get("results/aa/missing.png")


def test_signed_url_names_the_key_and_expires(storage):
    storage.put("results/aa/one.webp", b"first", "image/webp")
    signed = storage.signed_url("results/aa/one.webp", 120)
    parts = urllib.parse.urlsplit(signed.url)
    assert parts.path.endswith("/results/aa/one.webp")
    assert 100 < signed.expires_at - time.time() <= 120


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs/path", "a/../../b", "", "a//b"])
def test_keys_cannot_escape(storage, key):
    with pytest.raises(ValueError, match="invalid storage key"):
        storage.put(key, b"x", "image/png")
