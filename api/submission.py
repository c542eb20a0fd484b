"""Turning a validated upload into a job: normalise, hash, store, look in the cache, enqueue."""

from __future__ import annotations

from dataclasses import dataclass, field

from api.idempotency import wait_for_job
from api.images import normalise_upload
from api.services import Services
from api.timing import stage
from api.validation import JobOptions
from shared.cache import Rendered
from shared.encoding import encode_lossless
from shared.hashing import (
    canonical_json,
    cutout_key,
    cutout_view_key,
    effect_key,
    input_key,
    sha256_hex,
)
from shared.jobs.model import CUTOUT, JobRecord, JobRequest, StoredObject, Webhook, new_job_id
from shared.metrics import JOBS_ACCEPTED
from shared.queues import enqueue_effects, enqueue_segment, enqueue_webhook_delivery

INPUT_CONTENT_TYPE = "image/png"


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
        hits = _cached_results(svc, request)
        svc.jobs.finish_from_cache(job, hits.results, hits.model_id, hits.source_key)
    with stage("enqueue"):
        _enqueue(svc, job_id, request, hits.results, options.webhook)
    return svc.jobs.get(job_id) if hits.results else job


def _enqueue(
    svc: Services,
    job_id: str,
    request: JobRequest,
    cached: dict[str, StoredObject],
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


def _store_input(svc: Services, data: bytes, sha: str) -> StoredObject:
    """The normalised input, decoded and stored once per distinct upload."""
    settings = svc.settings

    def normalised() -> Rendered:
        image = normalise_upload(data, settings.max_pixels, settings.max_side)
        return Rendered(
            encode_lossless(image.pixels), INPUT_CONTENT_TYPE, image.width, image.height
        )

    return svc.cache.get_or_store(input_key(sha, settings.max_side), normalised).stored


@dataclass(frozen=True)
class CacheHits:
    """What already exists for a request: the model it was made with, the lossless
    cutout the effects start from, and each result found (the cutout in the client's format)."""

    model_id: str = ""
    source_key: str | None = None
    results: dict[str, StoredObject] = field(default_factory=dict)


def _cached_results(svc: Services, request: JobRequest) -> CacheHits:
    model_id = svc.cache.current_model()
    if model_id is None:
        return CacheHits()
    source = cutout_key(request.input_sha256, svc.settings.max_side, model_id)
    view = None
    if svc.cache.lookup(source, "cutout") is not None:
        view = svc.cache.lookup(cutout_view_key(source, request.output))
    if view is None:
        return CacheHits()
    found = {CUTOUT: view}
    for name in request.effect_order:
        key = effect_key(source, name, request.params.get(name, {}), request.output)
        hit = svc.cache.lookup(key, "effect")
        if hit is not None:
            found[name] = hit
    return CacheHits(model_id, source, found)
