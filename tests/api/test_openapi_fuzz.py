"""Property-based API test: schemathesis drives every documented operation from
/v1/openapi.json against the real app and Redis. Zero server errors, and every
answer conforms to the document (status code, content type, body schema)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api import create_app, upload
from shared.errors import FetchRefused
from tests.conftest import UNIT_REDIS_URL, make_settings

#: Bounded so the suite stays quick on two cores: examples per operation.
EXAMPLES_PER_OPERATION = 40
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

# schemathesis parametrizes at collection time, so the app is built then (it connects
# to Redis only when a request needs it); the fixture below flushes the database.
APP = create_app(
    {
        "TESTING": True,
        "CUTFX_SETTINGS": make_settings(
            UNIT_REDIS_URL, Path(tempfile.mkdtemp(prefix="cutfx-fuzz-")) / "storage"
        ),
    }
)
# /readyz answers its documented 503 here by design (no workers run in this test); the
# readiness tests cover it with real workers.
# Both modes: documents the API accepts, and ones it must refuse (with a 4xx, never a 5xx).
CONFIG = schemathesis.Config()
CONFIG.projects.default.generation.update(modes=list(schemathesis.GenerationMode))
schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", APP, config=CONFIG).exclude(
    path="/readyz"
)


@pytest.fixture(autouse=True)
def no_fetches(monkeypatch):
    """Generated image_url values may name any host: the fetch is replaced by its refusal,
    so no generated address is ever contacted (tests/api/test_image_url.py fetches for
    real, from loopback)."""

    def refused(url: str, *args: object) -> bytes:
        raise FetchRefused("image_url is not fetched in this test", "image_url")

    monkeypatch.setattr(upload, "fetch_photo", refused)
    monkeypatch.setattr(upload, "read_photo_object", refused)


@pytest.fixture(autouse=True)
def clean_redis():
    client = redis.Redis.from_url(UNIT_REDIS_URL)
    client.flushdb()
    yield
    client.flushdb()


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_server_errors_and_answers_match_the_document(case):
    response = case.call()
    case.validate_response(response, checks=CHECKS)
