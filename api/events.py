"""GET /v1/jobs/<id>/events: the job's Redis Stream as Server-Sent Events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, request, stream_with_context

from api.auth import owner
from api.services import Services, services
from shared.errors import InvalidEventId, InvalidParameter, MalformedRequest
from shared.jobs.events import JobEvent, check_event_id, follow_events
from shared.jobs.store import START_OF_STREAM
from shared.jobs.view import event_view

blueprint = Blueprint("events", __name__, url_prefix="/v1/jobs")

#: Idle connections get a comment this often, so proxies keep them open.
KEEPALIVE_MS = 15_000
#: Bounds of ?keepalive_ms=: never 0 (XREAD BLOCK 0 waits for ever), never so long
#: that a vanished client holds its connection past the Redis socket timeout.
KEEPALIVE_MS_RANGE = (100, 60_000)
#: Tells EventSource how long to wait before it reconnects.
RETRY_MS = 2_000
SSE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
}


def resume_point() -> str:
    after = request.headers.get("Last-Event-ID") or request.args.get("since") or START_OF_STREAM
    return since_param(after)


def since_param(raw: str) -> str:
    """`raw` as the event id a client resumes after; a bad one is a 422 naming `since`."""
    try:
        return check_event_id(raw)
    except InvalidEventId as exc:
        raise InvalidParameter(exc.message, field="since") from None


def keepalive_interval() -> int:
    raw = request.args.get("keepalive_ms")
    if raw is None:
        return KEEPALIVE_MS
    low, high = KEEPALIVE_MS_RANGE
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise MalformedRequest(
            f"keepalive_ms must be a whole number from {low} to {high}", field="keepalive_ms"
        )
    return int(raw)


def enrich(event: JobEvent, svc: Services) -> dict[str, Any]:
    """Result events get a fresh signed URL; the stream itself stores only the key."""
    return event_view(event.data, svc.storage, svc.settings.url_ttl_s, url_base=request.host_url)


def format_event(event: JobEvent, data: dict[str, Any]) -> str:
    return f"id: {event.id}\nevent: {event.type}\ndata: {json.dumps(data)}\n\n"


@blueprint.get("/<job_id>/events")
def job_events(job_id: str) -> Response:
    svc = services()
    svc.jobs.require_owned(job_id, owner())
    after = resume_point()
    keepalive_ms = keepalive_interval()
    # A finished job's stream is history: replay what is left without waiting, then end.
    block_ms = None if svc.jobs.is_finished(job_id) else keepalive_ms

    def stream() -> Iterator[str]:
        yield f"retry: {RETRY_MS}\n\n"
        for event in follow_events(svc.redis, job_id, after, block_ms):
            if event is None:
                # Idle: end when replaying history, or once the job is gone or finished.
                status = None if block_ms is None else svc.jobs.status_of(job_id)
                if status is None or status.finished:
                    return
                yield ": keep-alive\n\n"
                continue
            yield format_event(event, enrich(event, svc))

    return Response(
        stream_with_context(stream()), mimetype="text/event-stream", headers=SSE_HEADERS
    )
