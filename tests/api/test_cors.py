"""CORS as browsers send it: preflights, answers a page may read, origins refused."""

from __future__ import annotations

import pytest

from api import create_app
from api.middleware import key_id_of
from tests.api.keys import KEY_A, KEY_B, bearer, keyed_submit
from tests.api.test_client_tokens import OTHER_SHOP, SHOP, issue
from tests.helpers import wait_finished

EVIL = "https://evil.example"
EVERYONE = "https://brand.example"


@pytest.fixture
def api(production):
    configured = production.with_overrides(
        cors_origins=(EVERYONE,),
        key_origins={key_id_of(KEY_A): (SHOP,), key_id_of(KEY_B): (OTHER_SHOP,)},
    )
    return create_app({"TESTING": True, "CUTFX_SETTINGS": configured}).test_client()


def preflight(api, path: str, origin: str, method: str = "POST"):
    return api.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": (
                "authorization, idempotency-key, cancel-after, traceparent"
            ),
        },
    )


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/v1/jobs", "POST"),
        ("/v1/jobs/abc", "GET"),
        ("/v1/jobs/abc", "DELETE"),
        ("/v1/jobs/abc/events", "GET"),
        ("/v1/client-tokens", "POST"),
    ],
)
def test_a_preflight_from_an_allowed_origin_is_answered(api, path, method):
    answer = preflight(api, path, SHOP, method)
    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == SHOP
    allowed_headers = answer.headers["Access-Control-Allow-Headers"].lower()
    for header in ("authorization", "idempotency-key", "cancel-after", "traceparent"):
        assert header in allowed_headers
    assert method in answer.headers["Access-Control-Allow-Methods"]
    assert int(answer.headers["Access-Control-Max-Age"]) > 0
    assert "Access-Control-Allow-Credentials" not in answer.headers, "no cookies, ever"


def test_a_preflight_from_another_origin_gets_no_cors_headers(api):
    for origin in (EVIL, "null", "https://shop.example.evil.example", "http://shop.example"):
        answer = preflight(api, "/v1/jobs", origin)
        assert not any(name.startswith("Access-Control-") for name, _ in answer.headers), origin


def test_an_answer_to_an_allowed_page_exposes_what_a_client_reads(api):
    answer = keyed_submit(api, KEY_A, headers={"Origin": SHOP, "Idempotency-Key": "k1"})
    assert answer.status_code == 202
    assert answer.headers["Access-Control-Allow-Origin"] == SHOP
    assert "Origin" in answer.headers["Vary"]
    exposed = answer.headers["Access-Control-Expose-Headers"]
    for header in ("Location", "Retry-After", "Server-Timing", "X-RateLimit-Remaining"):
        assert header in exposed
    assert "traceparent" in exposed
    stream = api.get(
        f"/v1/jobs/{answer.get_json()['id']}/events?keepalive_ms=100",
        headers={**bearer(KEY_A), "Origin": SHOP},
    )
    assert stream.headers["Access-Control-Allow-Origin"] == SHOP


def test_errors_reach_an_allowed_page_too(api):
    answer = api.get("/v1/jobs/nope", headers={**bearer(KEY_A), "Origin": SHOP})
    assert answer.status_code == 404
    assert answer.headers["Access-Control-Allow-Origin"] == SHOP


def test_a_secret_key_from_an_origin_it_is_not_allowed_on_is_refused(api):
    for key, origin in ((KEY_A, EVIL), (KEY_A, OTHER_SHOP), (KEY_B, SHOP)):
        answer = keyed_submit(api, key, headers={"Origin": origin})
        assert answer.status_code == 403, (key, origin)
        assert answer.get_json()["error"]["code"] == "origin_not_allowed"
    assert keyed_submit(api, KEY_A).status_code == 202, "a server sends no Origin"
    assert keyed_submit(api, KEY_B, headers={"Origin": EVERYONE}).status_code == 202
    own = keyed_submit(api, KEY_B, headers={"Origin": "http://localhost"})
    assert own.status_code == 202, "the API's own page is always allowed"


def test_a_token_from_the_global_origin_list_is_still_bound_to_its_own(api):
    token = issue(api, origin=EVERYONE)["token"]
    assert keyed_submit(api, token, headers={"Origin": EVERYONE}).status_code == 202
    assert keyed_submit(api, token, headers={"Origin": SHOP}).status_code == 403


def test_the_javascript_client_is_a_module_an_allowed_page_may_load(api):
    answer = api.get("/v1/client.js", headers={"Origin": SHOP})
    assert answer.status_code == 200
    assert answer.mimetype == "text/javascript"
    assert answer.headers["Access-Control-Allow-Origin"] == SHOP
    source = answer.get_data(as_text=True)
    for export in (
        "export function createClient",
        "export async function showResults",
        "export async function* readEvents",
        "export class CutfxError",
    ):
        assert export in source
    assert "EventSource(" not in source, "credentials never go in a stream URL"
    assert (
        api.get("/v1/client.js", headers={"Origin": EVIL}).headers.get(
            "Access-Control-Allow-Origin"
        )
        is None
    )


@pytest.mark.e2e
def test_a_signed_download_is_readable_by_an_allowed_page(e2e_settings, workers):
    configured = e2e_settings.with_overrides(cors_origins=(SHOP,))
    api = create_app({"TESTING": True, "CUTFX_SETTINGS": configured}).test_client()
    from tests.helpers import sample_variant, submit

    job = wait_finished(api, submit(api, sample_variant(), effects="color").get_json()["id"])
    url = job["results"]["color"]["url"]
    path = url.split("//", 1)[1].split("/", 1)[1]
    answer = api.get("/" + path, headers={"Origin": SHOP})
    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == SHOP
    assert (
        api.get("/" + path, headers={"Origin": EVIL}).headers.get("Access-Control-Allow-Origin")
        is None
    )
