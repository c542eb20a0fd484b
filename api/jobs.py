"""The job routes: POST /v1/jobs and the submit behind it (an upload normalised, hashed,
stored, looked up in the cache, recorded and queued), GET /v1/jobs/<id> (with long-poll),
DELETE /v1/jobs/<id> (cancel), GET /v1/jobs/<id>/events (Server-Sent Events), and how a
job is presented."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Response, request, stream_with_context, url_for
from werkzeug.datastructures import MultiDict

from api.idempotency import check_key, wait_for_job
from api.middleware import (
    STREAM_LEASE_S,
    Services,
    client_token,
    key_id,
    owner,
    services,
    stage,
)
from api.tokens import ClientToken
from api.upload import (
    BACKGROUND,
    PHOTO,
    PHOTO_BY_URL,
    PHOTO_URL_FIELD,
    JobOptions,
    UploadPart,
    check_known_fields,
    check_one_photo,
    json_fields,
    normalise_upload,
    parse_cancel_after,
    parse_options,
    photo_from_url,
    read_upload,
)
from shared.errors import (
    AllowanceExhausted,
    Forbidden,
    InvalidEventId,
    InvalidParameter,
    MalformedRequest,
    QuotaExhausted,
    TooManyActiveJobs,
)
from shared.jobs import plan
from shared.jobs.model import (
    NO_SUBJECT,
    ORIGINAL,
    STANDARD,
    JobRecord,
    JobRequest,
    Owner,
    StoredObject,
    cutout_checks,
    event_view,
    failed_check,
    job_view,
    new_job_id,
)
from shared.jobs.plan import (
    Rendered,
    ResultCache,
    cache_scope,
    canonical_json,
    enqueue_webhook_delivery,
    input_key,
    sha256_hex,
)
from shared.jobs.store import START_OF_STREAM, JobEvent, check_event_id, follow_events, read_events
from shared.output import encode_lossless
from shared.telemetry import JOBS_ACCEPTED, utc_today

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
    fields = submitted_fields()
    if token is not None and fields.get("callback_url"):
        raise Forbidden(
            "webhooks are set by the shop's server, not a client token", field="callback_url"
        )
    check_known_fields(set(fields.keys()), set(request.files.keys()))
    background_upload = request.files.get(BACKGROUND.field)
    options = parse_options(
        fields,
        key_id=key_id(),
        allow_loopback_callbacks=svc.settings.webhook_allow_loopback,
        has_background_image=background_upload is not None,
    )
    raw_cancel_after = request.headers.get(CANCEL_AFTER_HEADER)
    if raw_cancel_after is not None:
        options = replace(options, cancel_after_s=parse_cancel_after(raw_cancel_after))
    data, photo_part = read_photo(fields, svc)
    background = (
        None
        if background_upload is None
        else read_upload(background_upload, svc.settings.max_upload_bytes, BACKGROUND.field)
    )
    raw_key = request.headers.get(IDEMPOTENCY_HEADER)
    idempotency_key = check_key(raw_key) if raw_key is not None else None
    submission = submit_job(
        svc, data, options, idempotency_key, Submitter(owner(), token), background, photo_part
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
        body = present_job(job, svc)
    headers = {"Location": links["self"]}
    if submission.replayed:
        headers[REPLAYED_HEADER] = "true"
    return body, 202, headers


def submitted_fields() -> MultiDict[str, str]:
    """The fields of a multipart (or urlencoded) form, or of a JSON object: one vocabulary."""
    if not request.is_json:
        return request.form
    body = request.get_json(silent=True)
    if body is None:
        raise MalformedRequest("the body is not valid JSON")
    return json_fields(body)


def read_photo(fields: MultiDict[str, str], svc: Services) -> tuple[bytes, UploadPart]:
    """The uploaded photo, or the one its address gives (fetched within its own timing),
    and the field its errors name."""
    url = fields.get(PHOTO_URL_FIELD) or None
    upload = request.files.get(PHOTO.field)
    check_one_photo(url, upload)
    if url is None:
        return read_upload(upload, svc.settings.max_upload_bytes), PHOTO
    with stage("fetch"):
        return photo_from_url(url, svc.settings), PHOTO_BY_URL


@blueprint.get("/<job_id>")
def get_job(job_id: str) -> dict[str, Any]:
    """The job; with ?wait=N, held until it changes (after ?since=<event id>) or N s pass."""
    svc = services()
    job = svc.jobs.get_owned(job_id, owner())
    wait_s = parse_wait(request.args.get("wait"))
    if wait_s and not job.finished:
        since = since_param(request.args.get("since") or svc.jobs.last_event_id(job_id))
        with svc.stream_slots.held(owner().key_id):
            changed = read_events(svc.redis, job_id, since, block_ms=int(wait_s * 1000))
        if changed:
            job = svc.jobs.get(job_id)
    body = present_job(job, svc)
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
    body = present_job(job, svc)
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


# What clients see of a job, with the API's own links and absolute download URLs.


def job_links(job_id: str) -> dict[str, str]:
    return {
        "self": url_for("jobs.get_job", job_id=job_id, _external=True),
        "events": url_for("events.job_events", job_id=job_id, _external=True),
    }


def present_job(job: JobRecord, svc: Services) -> dict[str, Any]:
    return job_view(
        job,
        svc.storage,
        svc.settings.url_ttl_s,
        job_links(job.id),
        url_base=request.host_url,
        kept_storage=svc.kept_storage,
    )


# GET /v1/jobs/<id>/events: the job's Redis Stream as Server-Sent Events.

events_blueprint = Blueprint("events", __name__, url_prefix="/v1/jobs")

#: Idle connections get a comment this often, so proxies keep them open.
KEEPALIVE_MS = 15_000
#: Bounds of ?keepalive_ms=: never 0 (XREAD BLOCK 0 waits for ever), never so long
#: that a vanished client holds its connection past the Redis socket timeout.
KEEPALIVE_MS_RANGE = (100, 60_000)
#: Tells EventSource how long to wait before it reconnects.
RETRY_MS = 2_000
#: A stream renews its slot (StreamSlots) this often: well inside the lease.
STREAM_RENEW_S = STREAM_LEASE_S / 3
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


@events_blueprint.get("/<job_id>/events")
def job_events(job_id: str) -> Response:
    svc = services()
    svc.jobs.require_owned(job_id, owner())
    after = resume_point()
    keepalive_ms = keepalive_interval()
    # A finished job's stream is history: replay what is left without waiting, then end.
    block_ms = None if svc.jobs.is_finished(job_id) else keepalive_ms
    key = owner().key_id
    slot = svc.stream_slots.claim(key)

    def stream() -> Iterator[str]:
        yield f"retry: {RETRY_MS}\n\n"
        renewed_at = time.monotonic()
        for event in follow_events(svc.redis, job_id, after, block_ms):
            if time.monotonic() - renewed_at > STREAM_RENEW_S:
                svc.stream_slots.renew(key, slot)
                renewed_at = time.monotonic()
            if event is None:
                # Idle: end when replaying history, or once the job is gone or finished.
                status = None if block_ms is None else svc.jobs.status_of(job_id)
                if status is None or status.finished:
                    return
                yield ": keep-alive\n\n"
                continue
            yield format_event(event, enrich(event, svc))

    response = Response(
        stream_with_context(stream()), mimetype="text/event-stream", headers=SSE_HEADERS
    )
    # The server closes the response however the stream ends, even before its first byte.
    response.call_on_close(lambda: svc.stream_slots.release(key, slot))
    return response


# --- submit: a validated upload turned into a job ------------------------------------------

INPUT_CONTENT_TYPE = "image/png"
#: How soon a client over its unfinished-job cap should try again.
ACTIVE_CAP_RETRY_AFTER_S = 5


@dataclass(frozen=True)
class Submission:
    job: JobRecord
    replayed: bool = False


@dataclass(frozen=True)
class Submitter:
    """Who submits: the owner the job will have, and the client token used, if any."""

    owner: Owner = field(default_factory=Owner)
    token: ClientToken | None = None


def submit_job(
    svc: Services,
    data: bytes,
    options: JobOptions,
    idempotency_key: str | None = None,
    submitter: Submitter | None = None,
    background: bytes | None = None,
    photo_part: UploadPart = PHOTO,
) -> Submission:
    """Create and queue a job for the submitter (with `background`, the uploaded image
    behind the subject; `photo_part`, what its errors name); with an Idempotency-Key, a
    repeat returns the first job."""
    submitter = submitter or Submitter()
    owner = submitter.owner
    sha = sha256_hex(data)
    job_id = new_job_id()
    if idempotency_key is not None:
        described = fingerprint(sha, options, sha256_hex(background) if background else None)
        earlier = svc.idempotency.claim(owner.scope, idempotency_key, described, job_id)
        if earlier is not None:
            wait_for_job(svc.jobs.exists, earlier)
            return Submission(svc.jobs.get_owned(earlier, owner), replayed=True)
    try:
        _check_allowance(svc, owner.key_id)
        with _token_quota(svc, submitter.token), _active_slot(svc, owner.key_id, job_id) as rank:
            upload = Upload(data, sha, background, photo_part)
            return Submission(_create_job(svc, job_id, upload, options, owner, rank))
    except BaseException:
        if idempotency_key is not None:
            svc.idempotency.release(owner.scope, idempotency_key)
        raise


def _check_allowance(svc: Services, key_id: str) -> None:
    """AllowanceExhausted when the key has spent its photos of the month (UTC)."""
    allowance = svc.settings.key_allowances.get(key_id)
    if allowance is None:
        return
    used = svc.usage.photos_this_month(key_id)
    if used >= allowance:
        next_month = next_month_start()
        raise AllowanceExhausted(
            f"this API key has used its {allowance} photos of the month; more from "
            f"{next_month.date().isoformat()} (UTC)",
            retry_after_s=max(1, int(next_month.timestamp() - time.time())),
        )


def next_month_start() -> datetime:
    today = utc_today()
    first = (today.replace(day=28) + timedelta(days=4)).replace(day=1)
    return datetime(first.year, first.month, first.day, tzinfo=UTC)


@contextmanager
def _token_quota(svc: Services, token: ClientToken | None) -> Iterator[None]:
    """The token's quota claimed for the job, and given back if the job is not created."""
    if token is None:
        yield
        return
    if not svc.token_quota.claim(token):
        raise QuotaExhausted(f"this client token may submit {token.max_jobs} jobs; ask for another")
    try:
        yield
    except BaseException:
        svc.token_quota.release(token)
        raise


@contextmanager
def _active_slot(svc: Services, key_id: str, job_id: str) -> Iterator[int]:
    """The key's unfinished-job slot claimed for the job (yields its rank among the key's
    unfinished jobs), and freed if the job is not created."""
    rank = _claim_active_slot(svc, key_id, job_id)
    try:
        yield rank
    except BaseException:
        svc.jobs.release_active_slot(key_id, job_id)
        raise


def _claim_active_slot(svc: Services, owner: str, job_id: str) -> int:
    cap = svc.settings.max_active_jobs_per_key
    rank = svc.jobs.claim_active_slot(owner, job_id, cap)
    if not rank:
        raise TooManyActiveJobs(
            f"this API key already has {cap} unfinished jobs; wait for some to finish",
            retry_after_s=ACTIVE_CAP_RETRY_AFTER_S,
        )
    return rank


def fingerprint(input_sha256: str, options: JobOptions, background_sha256: str | None) -> str:
    described = {
        "input": input_sha256,
        "effects": list(options.effects),
        "primary": options.primary,
        "output": [options.output.name, options.output.quality],
        "params": options.params,
        "webhook": options.webhook.to_json() if options.webhook else None,
        "options": options.output_options.canonical(),
        "background_image": background_sha256,
        # Only when asked for: fingerprints of requests without it stay as they were.
        **({"preview": True} if options.preview else {}),
        **({"strict": True} if options.strict else {}),
        **({"resolution": options.resolution} if options.resolution != STANDARD else {}),
    }
    return sha256_hex(canonical_json(described).encode())


#: No longest side: a photo kept at its own size is bounded by CUTFX_MAX_PIXELS alone.
NO_SIDE_LIMIT = 1 << 30


@dataclass(frozen=True)
class Upload:
    """The photo's bytes and digest, and the uploaded background's bytes, if any."""

    data: bytes
    sha256: str
    background: bytes | None = None
    #: What the photo came in, as its errors name it.
    part: UploadPart = PHOTO


def _create_job(
    svc: Services, job_id: str, upload: Upload, options: JobOptions, owner: Owner, rank: int = 1
) -> JobRecord:
    cache = svc.cache.scoped(cache_scope(svc.settings.cache_scope, owner.key_id))
    output_options = options.output_options
    with stage("input"):
        model_input = stored_input = _store_input(
            svc, cache, upload.data, upload.sha256, upload.part
        )
        model_input_key = ""
        if options.resolution == ORIGINAL:
            # The model reads the photo at CUTFX_MAX_SIDE; the results are made at this.
            model_input_key = model_input.key
            stored_input = _store_input(
                svc, cache, upload.data, upload.sha256, upload.part, plan.ORIGINAL_SIDE
            )
        if upload.background is not None:
            behind = _store_input(
                svc, cache, upload.background, sha256_hex(upload.background), BACKGROUND
            )
            output_options = replace(output_options, background_image=behind.key)
    request = JobRequest(
        input_sha256=upload.sha256,
        input_key=stored_input.key,
        width=stored_input.width,
        height=stored_input.height,
        effects=options.effects,
        primary=options.primary,
        output=options.output,
        params=options.params,
        options=output_options,
        source_width=stored_input.source_width or stored_input.width,
        source_height=stored_input.source_height or stored_input.height,
        preview=options.preview,
        strict=options.strict,
        resolution=options.resolution,
        model_input_key=model_input_key,
        lane=options.lane,
        photo_sha256=plan.photo_sha256(
            model_input, stored_input if options.resolution == ORIGINAL else None
        ),
    )
    with stage("record"):
        job = svc.jobs.create(
            job_id, request, options.webhook, owner=owner, cancel_after_s=options.cancel_after_s
        )
        svc.metrics.increment(JOBS_ACCEPTED)
    with stage("cache"):
        done = plan.find_done(cache, request, svc.settings.max_side)
        checks = cutout_checks(done.subject, request, svc.check_thresholds)
        if request.strict and failed_check(checks, NO_SUBJECT):
            # The worker fails the cutout, as it would have found it: one failure path.
            done = plan.Done()
        svc.jobs.finish_from_cache(
            job,
            done.results,
            done.model_id,
            done.source_key,
            request.subject_in_upload(done.subject),
            checks,
        )
    with stage("enqueue"):
        plan.enqueue(svc.celery, job_id, plan.after_submit(request, done.results, rank))
        if options.webhook is not None:
            enqueue_webhook_delivery(svc.celery, job_id)
    return svc.jobs.get(job_id) if done.results else job


def _store_input(
    svc: Services,
    cache: ResultCache,
    data: bytes,
    sha: str,
    part: UploadPart = PHOTO,
    max_side: int | None = None,
) -> StoredObject:
    """The normalised input (the photo, or the `part` it came in) at `max_side`
    (CUTFX_MAX_SIDE by default; plan.ORIGINAL_SIDE: its own size, which CUTFX_MAX_PIXELS
    bounds), decoded and stored once per distinct upload; its errors name its part.

    Decoding runs in the process's decode pool, off the event loop that serves
    every other request and stream of this process.
    """
    settings = svc.settings
    side = settings.max_side if max_side is None else max_side
    limit = side if side != plan.ORIGINAL_SIDE else NO_SIDE_LIMIT

    def normalised() -> Rendered:
        return svc.decoder.run(_normalise_and_encode, data, settings.max_pixels, limit, part)

    return cache.get_or_store(input_key(sha, side), normalised).stored


def _normalise_and_encode(
    data: bytes, max_pixels: int, max_side: int, part: UploadPart
) -> Rendered:
    image = normalise_upload(data, max_pixels, max_side, part)
    encoded = encode_lossless(image.pixels)
    return Rendered(
        encoded,
        INPUT_CONTENT_TYPE,
        image.width,
        image.height,
        source_width=image.source_width,
        source_height=image.source_height,
        pixels_sha256=plan.pixels_sha256(image.pixels),
    )
