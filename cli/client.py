"""A small HTTP client of the cutfx API: submit, follow events, download."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from shared.errors import ApiError

DEFAULT_TIMEOUT_S = 30
EVENT_READ_TIMEOUT_S = 60


#: What an address is, as image_url takes it; anything else is a file.
PHOTO_ADDRESS_SCHEMES = ("http://", "https://", "gs://")


@dataclass(frozen=True)
class ServerEvent:
    id: str
    type: str
    data: dict[str, Any]


class CutfxClient:
    def __init__(self, base_url: str, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"

    def close(self) -> None:
        """Closes the kept-alive connections: a server stopping gracefully waits for an
        idle one until its keep-alive lapses."""
        self.session.close()

    def _check(self, response: requests.Response) -> dict[str, Any]:
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            body = {"error": {"message": response.text[:200]}}
        if response.status_code >= 400:
            raise ApiError(response.status_code, body)
        return body

    def ready(self) -> tuple[bool, str]:
        try:
            # Not through the session: once a request on it had been refused (the
            # server not listening yet), Session.close() left its later connections
            # open (requests 2.34, urllib3 2.8), and a stopping API waited out their
            # keep-alive. A probe has no use for a kept-alive connection anyway.
            response = requests.get(
                f"{self.base_url}/readyz", timeout=5, headers=self.session.headers
            )
        except requests.RequestException as exc:
            return False, f"API not answering ({type(exc).__name__})"
        if response.status_code == 200:
            return True, "ready"
        return False, response.json().get("error", {}).get("message", "not ready")

    def submit(
        self, image: Path | str, idempotency_key: str | None = None, **options: str
    ) -> dict[str, Any]:
        """Queue a photo: a file, or an address (http(s) or gs://) the service fetches."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        form = {k: v for k, v in options.items() if v is not None}
        if isinstance(image, str) and is_photo_address(image):
            response = self.session.post(
                f"{self.base_url}/v1/jobs",
                json={**form, "image_url": image},
                headers=headers,
                timeout=DEFAULT_TIMEOUT_S,
            )
            return self._check(response)
        image = Path(image)
        with image.open("rb") as handle:
            response = self.session.post(
                f"{self.base_url}/v1/jobs",
                files={"image": (image.name, handle)},
                data=form,
                headers=headers,
                timeout=DEFAULT_TIMEOUT_S,
            )
        return self._check(response)

    def job(self, job_id: str) -> dict[str, Any]:
        return self._check(
            self.session.get(f"{self.base_url}/v1/jobs/{job_id}", timeout=DEFAULT_TIMEOUT_S)
        )

    def keep(self, job_id: str, results: list[str] | None = None) -> dict[str, Any]:
        """Keep the job's results (all that succeeded, or those named) past the TTL."""
        body = {} if results is None else {"results": results}
        url = f"{self.base_url}/v1/jobs/{job_id}/keep"
        return self._check(self.session.post(url, json=body, timeout=DEFAULT_TIMEOUT_S))

    def release(self, job_id: str) -> dict[str, Any]:
        url = f"{self.base_url}/v1/jobs/{job_id}/keep"
        return self._check(self.session.delete(url, timeout=DEFAULT_TIMEOUT_S))

    def usage(self, first: str | None = None, last: str | None = None) -> dict[str, Any]:
        """What this key used per day, from `first` to `last` (YYYY-MM-DD; this month)."""
        span = {name: day for name, day in (("from", first), ("to", last)) if day}
        url = f"{self.base_url}/v1/usage"
        return self._check(self.session.get(url, params=span, timeout=DEFAULT_TIMEOUT_S))

    def events(self, job_id: str, since: str | None = None) -> Iterator[ServerEvent]:
        """The job's events until the final one, reconnecting with Last-Event-ID if cut off."""
        last_id = since
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_id:
                headers["Last-Event-ID"] = last_id
            try:
                with self.session.get(
                    f"{self.base_url}/v1/jobs/{job_id}/events",
                    headers=headers,
                    stream=True,
                    timeout=(DEFAULT_TIMEOUT_S, EVENT_READ_TIMEOUT_S),
                ) as response:
                    if response.status_code >= 400:
                        self._check(response)
                    for event in parse_sse(response.iter_lines(decode_unicode=True)):
                        last_id = event.id
                        yield event
                        if event.type == "job.finished":
                            return
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
                time.sleep(1)

    def download(self, url: str) -> bytes:
        response = self.session.get(url, timeout=DEFAULT_TIMEOUT_S)
        if response.status_code >= 400:
            self._check(response)
        return response.content


def parse_sse(lines: Iterator[str]) -> Iterator[ServerEvent]:
    event_id, event_type = "", "message"
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield ServerEvent(event_id, event_type, json.loads("\n".join(data)))
            event_type, data = "message", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "id":
            event_id = value
        elif field == "event":
            event_type = value
        elif field == "data":
            data.append(value)


def is_photo_address(value: str) -> bool:
    return value.startswith(PHOTO_ADDRESS_SCHEMES)


def extension_of(content_type: str) -> str:
    return {"image/png": "png", "image/webp": "webp", "image/jpeg": "jpg"}.get(content_type, "bin")
