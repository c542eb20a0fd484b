"""POST /v1/jobs, GET /v1/jobs/<id> and DELETE /v1/jobs/<id> (cancel)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from flask import Blueprint, request

from api.auth import client_token, key_id, owner
from api.events import since_param
from api.idempotency import check_key
from api.images import BACKGROUND, PHOTO
from api.presenters import job_links, present_job
from api.services import services
from api.submission import Submitter, submit_job
from api.validation import check_known_fields, parse_cancel_after, parse_options, read_upload
from shared.errors import Forbidden, InvalidParameter
from shared.jobs.events import read_events
from shared.queues import enqueue_webhook_delivery

blueprint = Blueprint("jobs", __name__, url_prefix="/v1/jobs")

IDEMPOTENCY_HEADER = "Idempotency-Key"
CANCEL_AFTER_HEADER = "Cancel-After"
CANCELED_BY_CLIENT = "canceled by the client"
REPLAYED_HEADER = "Idempotent-Replayed"
#: The longest a long-poll is held; clients loop for longer waits.
MAX_WAIT_S = 30.0


@blueprint.post("")
def create_job() -> tuple[dict[str, Any], int, dict[str, str]]:
    svc = services()
    token = client_token()
    if token is not None and request.form.get("callback_url"):
        raise Forbidden(
            "webhooks are set by the shop's server, not a client token", field="callback_url"
        )
    check_known_fields(set(request.form.keys()), set(request.files.keys()))
    background_upload = request.files.get(BACKGROUND.field)
    options = parse_options(
        request.form,
        key_id=key_id(),
        allow_loopback_callbacks=svc.settings.webhook_allow_loopback,
        has_background_image=background_upload is not None,
    )
    raw_cancel_after = request.headers.get(CANCEL_AFTER_HEADER)
    if raw_cancel_after is not None:
        options = replace(options, cancel_after_s=parse_cancel_after(raw_cancel_after))
    data = read_upload(request.files.get(PHOTO.field), svc.settings.max_upload_bytes)
    background = (
        None
        if background_upload is None
        else read_upload(background_upload, svc.settings.max_upload_bytes, BACKGROUND.field)
    )
    raw_key = request.headers.get(IDEMPOTENCY_HEADER)
    idempotency_key = check_key(raw_key) if raw_key is not None else None
    submission = submit_job(
        svc, data, options, idempotency_key, Submitter(owner(), token), background
    )
    job = submission.job
    links = job_links(job.id)
    body: dict[str, Any] = {
        "id": job.id,
        "status": job.status,
        "effects": list(job.request.effect_order),
        "links": links,
    }
    if job.finished:
        # Everything came from the cache: the answer carries the results themselves.
        body = present_job(job, svc.storage, svc.settings.url_ttl_s)
    headers = {"Location": links["self"]}
    if submission.replayed:
        headers[REPLAYED_HEADER] = "true"
    return body, 202, headers


@blueprint.get("/<job_id>")
def get_job(job_id: str) -> dict[str, Any]:
    """The job; with ?wait=N, held until it changes (after ?since=<event id>) or N s pass."""
    svc = services()
    job = svc.jobs.get_owned(job_id, owner())
    wait_s = parse_wait(request.args.get("wait"))
    if wait_s and not job.finished:
        since = since_param(request.args.get("since") or svc.jobs.last_event_id(job_id))
        if read_events(svc.redis, job_id, since, block_ms=int(wait_s * 1000)):
            job = svc.jobs.get(job_id)
    body = present_job(job, svc.storage, svc.settings.url_ttl_s)
    body["last_event_id"] = svc.jobs.last_event_id(job_id)
    return body


@blueprint.delete("/<job_id>")
def cancel_job(job_id: str) -> dict[str, Any]:
    """Cancel what has not finished; finished results stay downloadable. Idempotent: a
    finished job is answered as it is."""
    svc = services()
    job = svc.jobs.get_owned(job_id, owner())
    if svc.jobs.cancel(job_id, CANCELED_BY_CLIENT):
        if job.webhook is not None:
            enqueue_webhook_delivery(svc.celery, job_id)
        job = svc.jobs.get(job_id)
    body = present_job(job, svc.storage, svc.settings.url_ttl_s)
    body["last_event_id"] = svc.jobs.last_event_id(job_id)
    return body


def parse_wait(raw: str | None) -> float:
    if raw is None or raw == "":
        return 0.0
    try:
        wait_s = float(raw)
    except ValueError:
        raise InvalidParameter(
            f"wait must be a number of seconds; got {raw!r}", field="wait"
        ) from None
    if not 0 <= wait_s <= MAX_WAIT_S:
        raise InvalidParameter(f"wait must be between 0 and {MAX_WAIT_S} seconds", field="wait")
    return wait_s
