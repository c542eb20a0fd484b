"""Client tokens as a shop's server and an attacker would use them, against the real API
and a real Redis."""

from __future__ import annotations

import time

import pytest

from api import create_app
from api.middleware import key_id_of
from api.tokens import TokenCodec
from shared.errors import Unauthorized
from tests.api.keys import KEY_A, KEY_B, bearer, keyed_submit

SHOP = "https://shop.example"
OTHER_SHOP = "https://other.example"


@pytest.fixture
def shop_settings(production):
    return production.with_overrides(
        key_origins={key_id_of(KEY_A): (SHOP,), key_id_of(KEY_B): (OTHER_SHOP,)},
        client_token_submit_rate_limit="4/minute",
    )


@pytest.fixture
def api(shop_settings):
    return create_app({"TESTING": True, "CUTFX_SETTINGS": shop_settings}).test_client()


def issue(api, key=KEY_A, **body):
    answer = api.post("/v1/client-tokens", json={"origin": SHOP, **body}, headers=bearer(key))
    assert answer.status_code == 201, answer.get_json()
    return answer.get_json()


def from_shop(token: str, origin: str = SHOP) -> dict[str, str]:
    return {**bearer(token), "Origin": origin}


def test_a_token_submits_and_reads_its_own_job(api):
    issued = issue(api, ttl_s=600, max_jobs=5)
    assert issued["token"].startswith("ct_")
    assert issued["token_id"].startswith("tok_")
    assert issued["origin"] == SHOP
    assert issued["max_jobs"] == 5
    assert 590 <= issued["expires_at"] - time.time() <= 600

    submitted = keyed_submit(api, issued["token"], headers={"Origin": SHOP})
    assert submitted.status_code == 202, submitted.get_json()
    job_id = submitted.get_json()["id"]
    for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/events?keepalive_ms=100"):
        assert api.get(path, headers=from_shop(issued["token"])).status_code == 200
    assert api.get(f"/v1/jobs/{job_id}", headers=bearer(KEY_A)).status_code == 200, (
        "the shop's server sees its customers' jobs"
    )


def test_a_token_never_sees_other_jobs(api):
    mine, theirs = issue(api), issue(api)
    by_key = keyed_submit(api, KEY_A).get_json()["id"]
    by_other_token = keyed_submit(api, theirs["token"], headers={"Origin": SHOP}).get_json()["id"]
    for job_id in (by_key, by_other_token):
        for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/events"):
            answer = api.get(path, headers=from_shop(mine["token"]))
            assert answer.status_code == 404
            assert answer.get_json()["error"]["code"] == "job_not_found"
        assert api.delete(f"/v1/jobs/{job_id}", headers=from_shop(mine["token"])).status_code == 404
    assert api.get(f"/v1/jobs/{by_key}", headers=bearer(KEY_A)).get_json()["status"] == "queued"


def test_an_idempotency_key_is_the_tokens_own(api):
    first, second = issue(api), issue(api)
    headers = {"Origin": SHOP, "Idempotency-Key": "checkout-42"}
    one = keyed_submit(api, first["token"], headers=headers).get_json()["id"]
    other = keyed_submit(api, second["token"], headers=headers)
    assert other.status_code == 202
    assert other.get_json()["id"] != one, "another token's Idempotency-Key replays nothing"


def test_a_token_cannot_be_forged_altered_or_used_late(api, shop_settings):
    issued = issue(api, ttl_s=10)
    payload, signature = issued["token"].removeprefix("ct_").rsplit(".", 1)
    other_payload, _ = issue(api, ttl_s=3600)["token"].removeprefix("ct_").rsplit(".", 1)
    flipped = payload[:-1] + ("A" if payload[-1] != "A" else "B")
    foreign = TokenCodec("another-service-signing-key-0123456789abcdef")
    forged, _ = foreign.issue(key_id_of(KEY_A), SHOP, 600, None)
    for token in (
        f"ct_{other_payload}.{signature}",
        f"ct_{flipped}.{signature}",
        forged,
        "ct_",
        "ct_garbage.sig",
    ):
        answer = keyed_submit(api, token, headers={"Origin": SHOP})
        assert answer.status_code == 401, token
        assert answer.get_json()["error"] == {
            "code": "unauthorized",
            "message": "the client token is not valid",
        }
    codec = TokenCodec(shop_settings.signing_key)
    assert codec.verify(issued["token"]).key_id == key_id_of(KEY_A)
    with pytest.raises(Unauthorized, match="expired"):
        codec.verify(issued["token"], now=issued["expires_at"])


def test_a_token_is_refused_off_its_origin_and_outside_its_routes(api):
    token = issue(api)["token"]
    elsewhere = keyed_submit(api, token, headers={"Origin": OTHER_SHOP})
    assert elsewhere.status_code == 403
    assert elsewhere.get_json()["error"]["code"] == "origin_not_allowed"
    for method, path in (
        ("post", "/v1/client-tokens"),
        ("get", "/v1/webhooks/secret"),
        ("get", "/metrics"),
    ):
        answer = getattr(api, method)(path, headers=from_shop(token), json={"origin": SHOP})
        assert answer.status_code in (401, 403), path
    webhook = keyed_submit(
        api, token, headers={"Origin": SHOP}, callback_url="https://shop.example/hook"
    )
    assert webhook.status_code == 403
    assert webhook.get_json()["error"]["field"] == "callback_url"
    url_token = api.get(f"/v1/jobs/x?token={token}")
    assert url_token.status_code == 401, "a credential in the URL is never read"


def test_a_token_quota_counts_created_jobs_only(api):
    token = issue(api, max_jobs=2)["token"]
    broken = keyed_submit(api, token, data=b"not an image", headers={"Origin": SHOP})
    assert broken.status_code == 415
    for _ in range(2):
        assert keyed_submit(api, token, headers={"Origin": SHOP}).status_code == 202
    over = keyed_submit(api, token, headers={"Origin": SHOP})
    assert over.status_code == 403
    assert over.get_json()["error"]["code"] == "quota_exhausted"


def test_each_token_has_its_own_submit_limit(api):
    first, second = issue(api)["token"], issue(api)["token"]
    codes = [keyed_submit(api, first, headers={"Origin": SHOP}).status_code for _ in range(5)]
    assert codes == [202, 202, 202, 202, 429]
    assert keyed_submit(api, second, headers={"Origin": SHOP}).status_code == 202
    assert keyed_submit(api, KEY_A).status_code == 202, "the key's own limit is apart"


def test_a_token_dies_with_its_key(shop_settings):
    before = create_app({"TESTING": True, "CUTFX_SETTINGS": shop_settings}).test_client()
    token = issue(before)["token"]
    rotated = shop_settings.with_overrides(api_keys=(KEY_B,))
    after = create_app({"TESTING": True, "CUTFX_SETTINGS": rotated}).test_client()
    answer = keyed_submit(after, token, headers={"Origin": SHOP})
    assert answer.status_code == 401
    assert "no longer valid" in answer.get_json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"origin": OTHER_SHOP}, 422, "origin"),
        ({"origin": "https://shop.example/path"}, 422, "origin"),
        ({}, 422, "origin"),
        ({"origin": SHOP, "ttl_s": 5}, 422, "ttl_s"),
        ({"origin": SHOP, "ttl_s": 90000}, 422, "ttl_s"),
        ({"origin": SHOP, "ttl_s": True}, 422, "ttl_s"),
        ({"origin": SHOP, "max_jobs": 0}, 422, "max_jobs"),
        ({"origin": SHOP, "scope": "admin"}, 422, "scope"),
    ],
)
def test_a_bad_token_request_names_the_field(api, body, status, field):
    answer = api.post("/v1/client-tokens", json=body, headers=bearer(KEY_A))
    assert answer.status_code == status
    assert answer.get_json()["error"]["field"] == field


def test_a_token_request_needs_a_key_and_a_json_object(api):
    assert api.post("/v1/client-tokens", json={"origin": SHOP}).status_code == 401
    answer = api.post("/v1/client-tokens", data="origin=x", headers=bearer(KEY_A))
    assert answer.status_code == 400
    assert answer.get_json()["error"]["code"] == "malformed_request"
