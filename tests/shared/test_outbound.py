"""Webhook targets as an attacker would choose them: at submit, and again at delivery."""

from __future__ import annotations

import http.server
import threading
import time

import pytest
import requests

from shared import outbound
from shared.errors import DeliveryRefused, InvalidParameter
from shared.outbound import (
    check_callback_address,
    delivery_manager,
    post_within_limits,
    redacted,
)
from tests.helpers import image_bytes, submit

INTERNAL_TARGETS = [
    "http://127.0.0.1:8000/hook",
    "http://localhost/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/",
    "http://172.16.5.4/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://0.0.0.0/",
    "http://224.0.0.1/",
    "http://240.0.0.1/",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::ffff:169.254.169.254]/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://2130706433/",  # 127.0.0.1 as one decimal number
]
MALFORMED_TARGETS = [
    "ftp://example.com/x",
    "file:///etc/passwd",
    "http://user:pw@8.8.8.8/hook",
    "http://:pw@8.8.8.8/hook",
    "http:///nohost",
    "http://8.8.8.8:99999/",
    "https://" + "a" * 3000 + ".com/",
]


@pytest.mark.parametrize("url", INTERNAL_TARGETS + MALFORMED_TARGETS)
def test_internal_and_malformed_targets_are_refused_at_submit(app, url):
    # The unit app lets webhooks reach loopback (the tests' receivers): use a strict one.
    response = submit(strict_client(app), image_bytes(), callback_url=url)
    assert response.status_code == 422, url
    assert response.get_json()["error"]["field"] == "callback_url"


def strict_client(app):
    from api import create_app

    settings = app.extensions["cutfx"].settings.with_overrides(webhook_allow_loopback=False)
    return create_app({"TESTING": True, "CUTFX_SETTINGS": settings}).test_client()


def test_a_public_address_is_taken():
    check_callback_address("https://8.8.8.8/hook?token=1", allow_loopback=False)


def test_logs_see_no_credentials_or_query():
    shown = redacted("https://user:secret@hooks.example.com:8443/in?token=abc#frag")
    assert shown == "https://hooks.example.com:8443/in"


class Receiver(http.server.ThreadingHTTPServer):
    def __init__(self, handler) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.hits: list[str] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class Quiet(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def read_body(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.hits.append(self.path)  # type: ignore[attr-defined]


def serving(handler):
    server = Receiver(handler)
    return server


@pytest.fixture
def internal():
    class Internal(Quiet):
        def do_GET(self) -> None:
            self.server.hits.append(self.path)  # type: ignore[attr-defined]
            self.send_response(200)
            self.end_headers()

        def do_POST(self) -> None:
            self.do_GET()

    server = serving(Internal)
    yield server
    server.shutdown()


def test_a_redirect_is_never_followed(internal):
    class Redirecting(Quiet):
        def do_POST(self) -> None:
            self.read_body()
            self.send_response(302)
            self.send_header("Location", internal.url + "/secret")
            self.end_headers()

    receiver = serving(Redirecting)
    try:
        manager = delivery_manager(allow_loopback=True)
        response = post_within_limits(manager, receiver.url, b"{}", {})
        assert response.status_code == 302, "a redirect is an answer, and not a 2xx one"
        assert receiver.hits == ["/hook"]
        assert internal.hits == [], "the redirect's target was never asked"
    finally:
        receiver.shutdown()


def test_delivery_checks_the_address_again_and_connects_to_it(internal):
    """A name that resolved to a public address at submit may resolve to an internal one
    later (DNS rebinding): delivery refuses what it connects to, not what was checked."""
    with pytest.raises(requests.RequestException):
        post_within_limits(delivery_manager(allow_loopback=False), internal.url, b"{}", {})
    assert internal.hits == []


def test_a_slow_receiver_is_cut_off_at_the_deadline(monkeypatch):
    monkeypatch.setattr(outbound, "DELIVERY_DEADLINE_S", 1.0)

    class Dripping(Quiet):
        def do_POST(self) -> None:
            self.read_body()
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.2)

    receiver = serving(Dripping)
    try:
        started = time.monotonic()
        with pytest.raises(DeliveryRefused, match="longer than"):
            post_within_limits(delivery_manager(True), receiver.url, b"{}", {})
        assert time.monotonic() - started < 3
    finally:
        receiver.shutdown()


def test_a_huge_answer_is_not_read(monkeypatch):
    class Flooding(Quiet):
        def do_POST(self) -> None:
            self.read_body()
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(1000):
                    self.wfile.write(b"x" * 65536)
            except (BrokenPipeError, ConnectionResetError):
                pass

    receiver = serving(Flooding)
    try:
        with pytest.raises(DeliveryRefused, match="larger than"):
            post_within_limits(delivery_manager(True), receiver.url, b"{}", {})
    finally:
        receiver.shutdown()


def test_credentials_in_the_url_are_refused_at_delivery_too():
    with pytest.raises(InvalidParameter):
        post_within_limits(delivery_manager(True), "http://u:p@127.0.0.1:9/x", b"{}", {})
