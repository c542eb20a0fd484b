"""GET /v1/jobs/<id>/events: the job's Redis Stream as Server-Sent Events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, request, stream_with_context

from api.services import Services, services
from shared.errors import InvalidParameter, JobNotFound
from shared.jobs.events import STREAM_ID, JobEvent, follow_events
from shared.jobs.store import START_OF_STREAM
from shared.jobs.view import event_view

blueprint = Blueprint("events", __name__, url_prefix="/v1/jobs")

#: Idle connections get a comment this often, so proxies keep them open.
KEEPALIVE_MS = 15_000
#: Tells EventSource how long to wait before it reconnects.
RETRY_MS = 2_000
SSE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
}


def resume_point() -> str:
    after = request.headers.get("Last-Event-ID") or request.args.get("since") or START_OF_STREAM
    if not STREAM_ID.match(after):
        raise InvalidParameter(f"not an event id: {after!r}", field="since")
    return after


def enrich(event: JobEvent, svc: Services) -> dict[str, Any]:
    """Result events get a fresh signed URL; the stream itself stores only the key."""
    return event_view(event.data, svc.storage, svc.settings.url_ttl_s, url_base=request.host_url)


def format_event(event: JobEvent, data: dict[str, Any]) -> str:
    return f"id: {event.id}\nevent: {event.type}\ndata: {json.dumps(data)}\n\n"


@blueprint.get("/<job_id>/events")
def job_events(job_id: str) -> Response:
    svc = services()
    if not svc.jobs.exists(job_id):
        raise JobNotFound(f"no job {job_id}")
    after = resume_point()
    keepalive_ms = int(request.args.get("keepalive_ms", KEEPALIVE_MS))

    def stream() -> Iterator[str]:
        yield f"retry: {RETRY_MS}\n\n"
        for event in follow_events(svc.redis, job_id, after, keepalive_ms):
            if event is None:
                if not svc.jobs.exists(job_id):
                    return
                yield ": keep-alive\n\n"
                continue
            yield format_event(event, enrich(event, svc))

    return Response(
        stream_with_context(stream()), mimetype="text/event-stream", headers=SSE_HEADERS
    )
