"""Turning a multipart upload into a queued job: validate, normalise, hash, store, enqueue."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from werkzeug.datastructures import FileStorage, MultiDict

from api.services import Services
from api.timing import stage
from effects import EFFECT_NAMES, get_effect
from shared.cache import CachedObject
from shared.encoding import OutputFormat, encode_lossless, output_format
from shared.errors import InvalidParameter, MalformedRequest, PayloadTooLarge
from shared.hashing import (
    canonical_json,
    cutout_key,
    cutout_view_key,
    effect_key,
    input_key,
    sha256_hex,
)
from shared.idempotency import wait_for_job
from shared.images import normalise_upload
from shared.job import CUTOUT, RESULT_SUCCEEDED, JobRecord, JobRequest, ResultRecord, Webhook, now
from shared.jobstore import new_job_id
from shared.metrics import JOBS_ACCEPTED
from shared.queues import enqueue_effects, enqueue_segment, enqueue_webhook_delivery
from shared.webhooks import WEBHOOK_EVENT_TYPES

INPUT_CONTENT_TYPE = "image/png"


@dataclass(frozen=True)
class JobOptions:
    """The validated form fields of POST /v1/jobs, apart from the image."""

    effects: tuple[str, ...]
    primary: str | None
    output: OutputFormat
    params: dict[str, dict[str, Any]]
    webhook: Webhook | None = None


def parse_options(form: MultiDict[str, str], key_id: str = "") -> JobOptions:
    effects = _parse_effects(form.get("effects"))
    primary = form.get("primary") or None
    if primary is not None and primary not in effects:
        raise InvalidParameter(
            f"primary must be one of the requested effects ({', '.join(effects)})", field="primary"
        )
    output = output_format(form.get("format"), _parse_quality(form.get("quality")))
    return JobOptions(
        effects,
        primary or effects[0],
        output,
        _parse_params(form.get("params"), effects),
        _parse_webhook(form.get("callback_url"), form.get("callback_events"), key_id),
    )


def _parse_webhook(url: str | None, events: str | None, key_id: str) -> Webhook | None:
    if not url:
        if events:
            raise InvalidParameter("callback_events needs a callback_url", field="callback_events")
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidParameter("callback_url must be an http(s) URL", field="callback_url")
    chosen = tuple(name.strip() for name in (events or "").split(",") if name.strip())
    unknown = [name for name in chosen if name not in WEBHOOK_EVENT_TYPES]
    if unknown:
        raise InvalidParameter(
            f"unknown event types {unknown}; choose from {', '.join(WEBHOOK_EVENT_TYPES)}",
            field="callback_events",
        )
    return Webhook(url, chosen or WEBHOOK_EVENT_TYPES, key_id)


def _parse_effects(raw: str | None) -> tuple[str, ...]:
    if raw is None or not raw.strip():
        return EFFECT_NAMES
    names: list[str] = []
    for name in (part.strip() for part in raw.split(",")):
        if name and name not in names:
            get_effect(name)
            names.append(name)
    if not names:
        raise InvalidParameter("effects must name at least one effect", field="effects")
    return tuple(names)


def _parse_quality(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidParameter(
            f"quality must be an integer; got {raw!r}", field="quality"
        ) from None


def _parse_params(raw: str | None, effects: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    supplied: Any = {}
    if raw:
        try:
            supplied = json.loads(raw)
        except ValueError as exc:
            raise MalformedRequest(f"params is not valid JSON: {exc}", field="params") from None
    if not isinstance(supplied, dict):
        raise MalformedRequest("params must be a JSON object keyed by effect", field="params")
    for name, value in supplied.items():
        if name not in effects:
            raise InvalidParameter(
                f"params names {name!r}, which is not among the requested effects", field="params"
            )
        if not isinstance(value, dict):
            raise InvalidParameter(f"params.{name} must be an object", field=f"params.{name}")
    return {name: get_effect(name).validate_params(supplied.get(name)) for name in effects}


def read_upload(upload: FileStorage | None, max_bytes: int) -> bytes:
    if upload is None:
        raise MalformedRequest("the multipart field 'image' is required", field="image")
    data = upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"the image is larger than {max_bytes} bytes", field="image")
    return data


@dataclass(frozen=True)
class Submission:
    job: JobRecord
    replayed: bool = False


def submit_job(
    svc: Services,
    data: bytes,
    options: JobOptions,
    idempotency_key: str | None = None,
    scope: str = "",
) -> Submission:
    """Create and queue a job; with an Idempotency-Key, a repeat returns the first job."""
    sha = sha256_hex(data)
    job_id = new_job_id()
    if idempotency_key is not None:
        earlier = svc.idempotency.claim(scope, idempotency_key, fingerprint(sha, options), job_id)
        if earlier is not None:
            wait_for_job(svc.jobs.exists, earlier)
            return Submission(svc.jobs.get(earlier), replayed=True)
    try:
        return Submission(_create_job(svc, job_id, data, sha, options))
    except BaseException:
        if idempotency_key is not None:
            svc.idempotency.release(scope, idempotency_key)
        raise


def fingerprint(input_sha256: str, options: JobOptions) -> str:
    described = {
        "input": input_sha256,
        "effects": list(options.effects),
        "primary": options.primary,
        "output": [options.output.name, options.output.quality],
        "params": options.params,
        "webhook": options.webhook.to_json() if options.webhook else None,
    }
    return sha256_hex(canonical_json(described).encode())


def _create_job(
    svc: Services, job_id: str, data: bytes, sha: str, options: JobOptions
) -> JobRecord:
    with stage("input"):
        stored_input = _store_input(svc, data, sha)
    request = JobRequest(
        input_sha256=sha,
        input_key=stored_input.key,
        width=stored_input.width,
        height=stored_input.height,
        effects=options.effects,
        primary=options.primary,
        output=options.output,
        params=options.params,
    )
    with stage("record"):
        job = svc.jobs.create(job_id, request, options.webhook)
        svc.metrics.increment(JOBS_ACCEPTED)
    with stage("cache"):
        source, cached = _cached_results(svc, request)
        _finish_cached(svc, job, source, cached)
    with stage("enqueue"):
        _enqueue(svc, job_id, request, cached, options.webhook)
    return svc.jobs.get(job_id) if cached else job


def _enqueue(
    svc: Services,
    job_id: str,
    request: JobRequest,
    cached: dict[str, CachedObject],
    webhook: Webhook | None,
) -> None:
    if CUTOUT not in cached:
        enqueue_segment(svc.celery, job_id)
    else:
        missing = [name for name in request.effect_order if name not in cached]
        if missing:
            enqueue_effects(svc.celery, job_id, missing, request.primary)
    if webhook is not None:
        enqueue_webhook_delivery(svc.celery, job_id)


def _store_input(svc: Services, data: bytes, sha: str) -> CachedObject:
    """The normalised input, decoded and stored once per distinct upload."""
    settings = svc.settings
    key = input_key(sha, settings.max_side)
    known = svc.cache.lookup(key)
    if known is not None:
        return known
    image = normalise_upload(data, settings.max_pixels, settings.max_side)
    encoded = encode_lossless(image.pixels)
    svc.storage.put(key, encoded, INPUT_CONTENT_TYPE)
    stored = CachedObject(key, INPUT_CONTENT_TYPE, len(encoded), image.width, image.height)
    svc.cache.remember(stored)
    return stored


def _cached_results(
    svc: Services, request: JobRequest
) -> tuple[str | None, dict[str, CachedObject]]:
    """What already exists for this request under the model the workers run now:
    the lossless cutout's key, and the results found (the cutout in the client's format)."""
    model_id = svc.cache.current_model()
    if model_id is None:
        return None, {}
    source = cutout_key(request.input_sha256, svc.settings.max_side, model_id)
    view = None
    if svc.cache.lookup(source, "cutout") is not None:
        view = svc.cache.lookup(cutout_view_key(source, request.output))
    if view is None:
        return None, {}
    found = {CUTOUT: view}
    for name in request.effect_order:
        key = effect_key(source, name, request.params.get(name, {}), request.output)
        hit = svc.cache.lookup(key, "effect")
        if hit is not None:
            found[name] = hit
    return source, found


def _finish_cached(
    svc: Services, job: JobRecord, source: str | None, cached: dict[str, CachedObject]
) -> None:
    if CUTOUT in cached:
        svc.jobs.set_model_id(job.id, svc.cache.current_model() or "")
    for name in job.request.result_names:
        if name in cached:
            hit = cached[name]
            record = ResultRecord(
                name=name,
                status=RESULT_SUCCEEDED,
                key=hit.key,
                content_type=hit.content_type,
                byte_size=hit.byte_size,
                width=hit.width,
                height=hit.height,
                cached=True,
                source_key=source if name == CUTOUT else None,
                timings={"queued_at": job.created_at, "started_at": now()},
            )
            svc.jobs.finish_result(job.id, record)
