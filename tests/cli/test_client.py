"""cli/client.py against a loopback HTTP server: what it leaves open."""

from __future__ import annotations

import http.server
import threading

import pytest

from cli.client import CutfxClient
from cli.stack import free_port
from tests.conftest import preferred_port
from tests.faults import wait_for
from tests.helpers import serving


class CountingHandler(http.server.BaseHTTPRequestHandler):
    """Answers every GET with a small body on a kept-alive connection; the server counts
    the connections its clients hold open."""

    protocol_version = "HTTP/1.1"
    server: CountingServer

    def handle(self) -> None:
        with self.server.lock:
            self.server.open_connections += 1
        try:
            super().handle()
        finally:
            with self.server.lock:
                self.server.open_connections -= 1

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


class CountingServer(http.server.ThreadingHTTPServer):
    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), CountingHandler)
        self.lock = threading.Lock()
        self.open_connections = 0


@pytest.fixture
def port() -> int:
    return free_port(preferred_port(8650))


def test_a_closed_client_holds_no_connection_after_probing_a_server_not_yet_up(port):
    # The demo probes the API before it listens, then downloads through the same client.
    # A connection left open would hold the API's graceful stop for its keep-alive.
    client = CutfxClient(f"http://127.0.0.1:{port}")
    ready, reason = client.ready()
    assert not ready
    assert "not answering" in reason
    server = CountingServer(port)
    with serving(server):
        assert client.ready() == (True, "ready")
        assert client.download(f"http://127.0.0.1:{port}/v1/files/a") == b"{}"
        assert server.open_connections == 1, "the download's connection is kept alive"
        client.close()
        wait_for(
            lambda: server.open_connections == 0, 5, "the closed client's connection stayed open"
        )
