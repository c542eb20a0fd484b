"""Outbound HTTP to addresses our users give us: webhooks (where their events go) and photo
URLs (where their photos come from). Public http(s) addresses only.

The address checks and the connection to the checked address (no second DNS
lookup that a rebinding could change) are requests-hardened's: it resolves the
host once, refuses loopback, private, link-local, CGNAT, multicast, reserved
and unspecified addresses (IPv4-mapped IPv6 forms as their IPv4 address), then
connects to that address with the host's name kept for TLS. cutfx adds what it
does not do: the URL's form, redirects (none for a webhook; for a photo at most
MAX_REDIRECTS, each target checked again as it is connected to), a total deadline
and a size cap applied while reading.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urljoin, urlsplit

import requests
from requests_hardened import Config, Manager
from requests_hardened.ip_filter import InvalidIPAddress, get_ip_address
from urllib3.exceptions import ProtocolError, ReadTimeoutError

from shared.errors import (
    DeliveryRefused,
    FetchFailed,
    FetchRefused,
    FetchTimeout,
    FetchTooLarge,
    InvalidParameter,
)

logger = logging.getLogger(__name__)

FIELD = "callback_url"
MAX_URL_LENGTH = 2048
CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 5.0
#: The whole delivery, from connecting to the last byte of the answer.
DELIVERY_DEADLINE_S = 15.0
#: A receiver's answer is read up to this many bytes, then the connection is dropped.
MAX_RESPONSE_BYTES = 64 * 1024
USER_AGENT = "cutfx-webhooks/1"
READ_CHUNK_BYTES = 64 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}
NOT_PUBLIC = "must point at a public address, not a private, loopback, link-local or reserved one"


def check_http_url(url: str, field: str) -> None:
    """The URL's form: http(s), a host, no credentials; InvalidParameter naming `field`."""
    if len(url) > MAX_URL_LENGTH:
        raise InvalidParameter(f"{field} is longer than {MAX_URL_LENGTH} characters", field)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise InvalidParameter(f"{field} is not a valid URL", field) from None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise InvalidParameter(f"{field} must be an http(s) URL with a host", field)
    if parts.username is not None or parts.password is not None:
        raise InvalidParameter(f"{field} must not carry credentials", field)


def check_callback_url(url: str) -> None:
    check_http_url(url, FIELD)


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
        raise InvalidParameter(f"callback_url {NOT_PUBLIC}", FIELD) from None
    except (socket.gaierror, UnicodeError):
        raise InvalidParameter(f"callback_url's host {host!r} does not resolve", FIELD) from None


def redacted(url: str) -> str:
    """The URL as logs may show it: no credentials, no query, no fragment."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


def delivery_manager(allow_loopback: bool) -> Manager:
    return _hardened(allow_loopback, (CONNECT_TIMEOUT_S, READ_TIMEOUT_S), USER_AGENT)


def _hardened(allow_loopback: bool, timeout: tuple[float, float], user_agent: str) -> Manager:
    """requests-hardened's sessions: public addresses only (loopback too when allowed),
    each connection to the address checked, redirects never followed by requests itself."""
    return Manager(
        Config(
            ip_filter_enable=True,
            ip_filter_allow_loopback_ips=allow_loopback,
            never_redirect=True,
            default_timeout=timeout,
            user_agent_override=user_agent,
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
    try:
        _read_within(response, MAX_RESPONSE_BYTES, started, DELIVERY_DEADLINE_S)
    except _BodyTooLarge:
        raise DeliveryRefused(f"the answer is larger than {MAX_RESPONSE_BYTES} bytes") from None
    except _BodyTooSlow:
        raise DeliveryRefused(f"the answer took longer than {DELIVERY_DEADLINE_S} s") from None


class _BodyTooLarge(Exception):
    pass


class _BodyTooSlow(Exception):
    pass


def _read_within(
    response: requests.Response, max_bytes: int, started: float, deadline_s: float
) -> bytes:
    """The body as it arrives (read1: no waiting for a full chunk, so a slow drip is timed
    too), up to `max_bytes` and until `deadline_s` after `started`; never more."""
    chunks: list[bytes] = []
    received = 0
    while chunk := response.raw.read1(READ_CHUNK_BYTES):
        received += len(chunk)
        if received > max_bytes:
            raise _BodyTooLarge
        if time.monotonic() - started > deadline_s:
            raise _BodyTooSlow
        chunks.append(chunk)
    return b"".join(chunks)


# --- photos by URL ---------------------------------------------------------------------

PHOTO_FIELD = "image_url"
#: Redirects a photo URL may take (a CDN's, a shortener's); each target is checked again.
MAX_REDIRECTS = 3
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
PHOTO_USER_AGENT = "cutfx-fetch/1"


def photo_manager(allow_loopback: bool, deadline_s: float) -> Manager:
    return _hardened(
        allow_loopback, (min(CONNECT_TIMEOUT_S, deadline_s), deadline_s), PHOTO_USER_AGENT
    )


def fetch_photo(url: str, max_bytes: int, deadline_s: float, allow_loopback: bool) -> bytes:
    """The bytes at `url`, as an upload's: at most `max_bytes`, within `deadline_s` in all,
    redirects followed (at most MAX_REDIRECTS) with each target checked as it is connected
    to. What the bytes are is for the decoder to tell, never the Content-Type.

    Raises FetchRefused (not a public http(s) address), FetchTooLarge, FetchTimeout or
    FetchFailed (no answer, or not a 2xx), each naming the field."""
    check_http_url(url, PHOTO_FIELD)
    started = time.monotonic()
    current = url
    with photo_manager(allow_loopback, deadline_s).get_session() as session:
        # Environment proxies would connect somewhere other than the address checked.
        session.trust_env = False
        for _ in range(MAX_REDIRECTS + 1):
            with _mapped_fetch_errors(current, deadline_s):
                response = session.get(
                    current,
                    stream=True,
                    headers={"Accept-Encoding": "identity"},
                    timeout=_remaining(started, deadline_s),
                )
                try:
                    if response.status_code not in REDIRECT_STATUSES:
                        return _photo_body(response, max_bytes, started, deadline_s)
                    current = _redirect_target(current, response)
                finally:
                    response.close()
    raise FetchFailed(f"image_url redirects more than {MAX_REDIRECTS} times", PHOTO_FIELD)


def _remaining(started: float, deadline_s: float) -> tuple[float, float]:
    left = deadline_s - (time.monotonic() - started)
    if left <= 0:
        raise _BodyTooSlow
    return (min(CONNECT_TIMEOUT_S, left), left)


def _redirect_target(current: str, response: requests.Response) -> str:
    location = response.headers.get("Location")
    if not location:
        raise FetchFailed(f"{redacted(current)} redirects without a Location", PHOTO_FIELD)
    target = urljoin(current, location)
    try:
        check_http_url(target, PHOTO_FIELD)
    except InvalidParameter:
        raise FetchRefused(
            "image_url redirects to something not an http(s) URL", PHOTO_FIELD
        ) from None
    logger.info("photo redirect", extra={"url": redacted(target)})
    return target


def _photo_body(
    response: requests.Response, max_bytes: int, started: float, deadline_s: float
) -> bytes:
    if not 200 <= response.status_code < 300:
        raise FetchFailed(
            f"the photo's server answered {response.status_code} for {redacted(response.url)}",
            PHOTO_FIELD,
        )
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _BodyTooLarge
    return _read_within(response, max_bytes, started, deadline_s)


@contextmanager
def _mapped_fetch_errors(url: str, deadline_s: float) -> Iterator[None]:
    """requests', urllib3's and the resolver's failures as cutfx's named fetch errors."""
    shown = redacted(url)
    try:
        yield
    except _BodyTooLarge:
        raise FetchTooLarge(f"the photo at {shown} is larger than allowed", PHOTO_FIELD) from None
    except (_BodyTooSlow, requests.Timeout, ReadTimeoutError, TimeoutError):
        raise FetchTimeout(
            f"the photo at {shown} did not arrive within {deadline_s:g} s", PHOTO_FIELD
        ) from None
    except InvalidIPAddress:
        raise FetchRefused(f"image_url {NOT_PUBLIC}", PHOTO_FIELD) from None
    except (socket.gaierror, UnicodeError):
        raise FetchFailed(f"the host of {shown} does not resolve", PHOTO_FIELD) from None
    except (requests.RequestException, ProtocolError, OSError) as exc:
        raise FetchFailed(
            f"the photo at {shown} could not be fetched: {type(exc).__name__}", PHOTO_FIELD
        ) from None
