"""Webhooks delivered by a real worker to a real HTTP server on loopback."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from shared.errors import InvalidSignature
from shared.webhooks import sign, verify, webhook_secret
from tests.api.test_metrics import scrape
from tests.faults import wait_for
from tests.helpers import sample_variant, submit, wait_finished

#: How long the webhook worker may take to deliver a finished job's event.
DELIVERY_TIMEOUT_S = 60


class Receiver(http.server.ThreadingHTTPServer):
    """Answers 500 to the first `fail_first` POSTs, then 204; keeps what it took."""

    def __init__(self, fail_first: int) -> None:
        super().__init__(("127.0.0.1", 0), ReceiverHandler)
        self.fail_first = fail_first
        self.attempts = 0
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class ReceiverHandler(http.server.BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            self.server.attempts += 1
            failing = self.server.attempts <= self.server.fail_first
            if not failing:
                self.server.received.append((dict(self.headers), body))
        self.send_response(500 if failing else 204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver():
    server = Receiver(fail_first=2)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


@pytest.mark.e2e
def test_events_are_posted_signed_in_order_and_retried(e2e_client, e2e_settings, receiver):
    before = scrape(e2e_client)
    body = submit(
        e2e_client,
        sample_variant(),
        effects="color,popart",
        callback_url=receiver.url,
        callback_events="result.succeeded,job.finished",
    ).get_json()
    wait_finished(e2e_client, body["id"])
    wait_for(
        lambda: any(h["Cutfx-Event"] == "job.finished" for h, _ in receiver.received),
        DELIVERY_TIMEOUT_S,
        "no job.finished delivery",
    )
    assert receiver.attempts >= len(receiver.received) + 2, "the failed POSTs were retried"
    secret = e2e_client.get("/v1/webhooks/secret").get_json()["secret"]
    assert secret == webhook_secret(e2e_settings.signing_key, "")
    events = []
    for headers, raw in receiver.received:
        verify(secret, headers["Cutfx-Signature"], raw)
        event = json.loads(raw)
        assert event["job_id"] == body["id"] == headers["Cutfx-Job-Id"]
        assert event["type"] == headers["Cutfx-Event"]
        events.append(event)
    types = [event["type"] for event in events]
    assert types == ["result.succeeded"] * 3 + ["job.finished"], "only the chosen types, in order"
    assert events[0]["data"]["name"] == "cutout", "effects start only once the cutout exists"
    assert {e["data"]["name"] for e in events[1:3]} == {"popart", "color"}
    assert events[0]["data"]["result"]["url"].startswith("/v1/files/results/")
    for event in events[:3]:
        # The photo's checks travel with every result (a list, empty when it passed them).
        assert isinstance(event["data"]["result"]["checks"], list)
    ids = [event["id"] for event in events]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    # Each POST is counted by its outcome: the two refused ones as failed.
    after = scrape(e2e_client)
    delivered = 'cutfx_webhook_deliveries_total{outcome="delivered"}'
    failed = 'cutfx_webhook_deliveries_total{outcome="failed"}'
    assert after[delivered] - before.get(delivered, 0) == len(receiver.received)
    assert after[failed] - before.get(failed, 0) == 2


def test_bad_callback_options_are_refused(client):
    from tests.helpers import image_bytes

    response = submit(client, image_bytes(), callback_url="ftp://example.com/x")
    assert response.status_code == 422
    assert response.get_json()["error"]["field"] == "callback_url"
    response = submit(
        client, image_bytes(), callback_url="http://127.0.0.1:9/x", callback_events="job.exploded"
    )
    assert response.get_json()["error"]["field"] == "callback_events"


def test_signatures_reject_tampering_and_replays():
    body = b'{"type":"job.finished"}'
    header = sign("secret", body, timestamp=1_000_000)
    verify("secret", header, body, now=1_000_100)
    with pytest.raises(InvalidSignature):
        verify("secret", header, body + b" ", now=1_000_100)
    with pytest.raises(InvalidSignature):
        verify("other", header, body, now=1_000_100)
    with pytest.raises(InvalidSignature):
        verify("secret", header, body, now=1_000_000 + 3600)
    with pytest.raises(InvalidSignature):
        verify("secret", "garbage", body)


def test_each_api_key_has_its_own_secret(settings):
    from api import create_app

    keyed = create_app(
        {"TESTING": True, "CUTFX_SETTINGS": settings.with_overrides(api_keys=("k1", "k2"))}
    ).test_client()
    first = keyed.get("/v1/webhooks/secret", headers={"Authorization": "Bearer k1"}).get_json()[
        "secret"
    ]
    second = keyed.get("/v1/webhooks/secret", headers={"Authorization": "Bearer k2"}).get_json()[
        "secret"
    ]
    assert first != second
    assert keyed.get("/v1/webhooks/secret").status_code == 401
