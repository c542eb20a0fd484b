"""Where webhooks may go: public http(s) addresses only, checked at submit and at delivery.

The address checks and the connection to the checked address (no second DNS
lookup that a rebinding could change) are requests-hardened's: it resolves the
host once, refuses loopback, private, link-local, CGNAT, multicast, reserved
and unspecified addresses (IPv4-mapped IPv6 forms as their IPv4 address), then
connects to that address with the host's name kept for TLS. cutfx adds what it
does not do: the URL's form, no redirects, a total deadline and a size cap on
the receiver's answer.
"""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import requests
from requests_hardened import Config, Manager
from requests_hardened.ip_filter import InvalidIPAddress, get_ip_address

from shared.errors import DeliveryRefused, InvalidParameter

FIELD = "callback_url"
MAX_URL_LENGTH = 2048
CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 5.0
#: The whole delivery, from connecting to the last byte of the answer.
DELIVERY_DEADLINE_S = 15.0
#: A receiver's answer is read up to this many bytes, then the connection is dropped.
MAX_RESPONSE_BYTES = 64 * 1024
USER_AGENT = "cutfx-webhooks/1"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def check_callback_url(url: str) -> None:
    """The URL's form: http(s), a host, no credentials; InvalidParameter otherwise."""
    if len(url) > MAX_URL_LENGTH:
        raise InvalidParameter(f"callback_url is longer than {MAX_URL_LENGTH} characters", FIELD)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise InvalidParameter("callback_url is not a valid URL", FIELD) from None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise InvalidParameter("callback_url must be an http(s) URL with a host", FIELD)
    if parts.username is not None or parts.password is not None:
        raise InvalidParameter("callback_url must not carry credentials", FIELD)


def check_callback_address(url: str, allow_loopback: bool) -> None:
    """The host resolves to a public address (InvalidParameter otherwise); checked at submit,
    and again at delivery by the connection itself."""
    check_callback_url(url)
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or _DEFAULT_PORTS[parts.scheme]
    try:
        get_ip_address(host, port, allow_loopback=allow_loopback)
    except InvalidIPAddress:
        raise InvalidParameter(
            "callback_url must point at a public address, not a private, loopback, "
            "link-local or reserved one",
            FIELD,
        ) from None
    except (socket.gaierror, UnicodeError):
        raise InvalidParameter(f"callback_url's host {host!r} does not resolve", FIELD) from None


def redacted(url: str) -> str:
    """The URL as logs may show it: no credentials, no query, no fragment."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


def delivery_manager(allow_loopback: bool) -> Manager:
    return Manager(
        Config(
            ip_filter_enable=True,
            ip_filter_allow_loopback_ips=allow_loopback,
            never_redirect=True,
            default_timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
            user_agent_override=USER_AGENT,
        )
    )


def post_within_limits(
    manager: Manager, url: str, body: bytes, headers: dict[str, str]
) -> requests.Response:
    """POST `body`; the answer is read to at most MAX_RESPONSE_BYTES, within the deadline.

    Raises requests' errors (an address refused is one of them) or DeliveryRefused.
    """
    check_callback_url(url)
    started = time.monotonic()
    with manager.get_session() as session:
        response = session.post(url, data=body, headers=headers, stream=True)
        try:
            _drain(response, started)
        finally:
            response.close()
    return response


def _drain(response: requests.Response, started: float) -> None:
    """Read the answer as it arrives (read1: no waiting for a full chunk), within the limits."""
    received = 0
    while chunk := response.raw.read1(8192):
        received += len(chunk)
        if received > MAX_RESPONSE_BYTES:
            raise DeliveryRefused(f"the answer is larger than {MAX_RESPONSE_BYTES} bytes")
        if time.monotonic() - started > DELIVERY_DEADLINE_S:
            raise DeliveryRefused(f"the answer took longer than {DELIVERY_DEADLINE_S} s")
