"""Signed download links of the local backend: they work, and tampering or expiry is a 403."""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from api.middleware import SERVICES_EXTENSION
from shared.signing import Purpose, derive_key
from shared.storage import link_signature


@pytest.fixture
def stored(app):
    storage = app.extensions[SERVICES_EXTENSION].storage
    storage.put("results/ab/object.webp", b"RIFF0000WEBPdata", "image/webp")
    return storage


def link_key(settings) -> str:
    return derive_key(settings.signing_key, Purpose.FILE_LINKS)


def split(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    return parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()}


def test_signed_link_downloads_with_type_and_immutable_caching(client, stored):
    response = client.get(stored.signed_url("results/ab/object.webp", 60).url)
    assert response.status_code == 200
    assert response.data == b"RIFF0000WEBPdata"
    assert response.content_type == "image/webp"
    assert "immutable" in response.headers["Cache-Control"]


def test_tampered_signature_is_refused(client, stored):
    path, query = split(stored.signed_url("results/ab/object.webp", 60).url)
    query["sig"] = "0" * 64
    response = client.get(f"{path}?{urlencode(query)}")
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "forbidden"


def test_a_signature_for_one_key_does_not_open_another(client, stored):
    stored.put("results/ab/other.webp", b"secret", "image/webp")
    _, query = split(stored.signed_url("results/ab/object.webp", 60).url)
    assert client.get(f"/v1/files/results/ab/other.webp?{urlencode(query)}").status_code == 403


def test_extended_expiry_is_refused(client, stored):
    path, query = split(stored.signed_url("results/ab/object.webp", 60).url)
    query["expires"] = str(int(query["expires"]) + 3600)
    assert client.get(f"{path}?{urlencode(query)}").status_code == 403


def test_expired_link_is_refused(client, stored, settings):
    expired_at = 1_000_000
    query = {
        "expires": expired_at,
        "sig": link_signature(link_key(settings), "results/ab/object.webp", expired_at),
    }
    response = client.get(f"/v1/files/results/ab/object.webp?{urlencode(query)}")
    assert response.status_code == 403
    assert "expired" in response.get_json()["error"]["message"]


def test_unsigned_link_is_refused(client, stored):
    assert client.get("/v1/files/results/ab/object.webp").status_code == 403


def test_a_signed_link_to_a_missing_object_is_404(client, stored):
    assert client.get(stored.signed_url("results/ab/gone.webp", 60).url).status_code == 404
