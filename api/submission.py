"""Turning a validated upload into a job: normalise, hash, store, look in the cache, enqueue."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from api.idempotency import wait_for_job
from api.images import normalise_upload
from api.services import Services
from api.timing import stage
from api.tokens import ClientToken
from api.validation import JobOptions
from shared.cache import Rendered, ResultCache, cache_scope
from shared.encoding import encode_lossless
from shared.errors import QuotaExhausted, TooManyActiveJobs
from shared.hashing import (
    canonical_json,
    cutout_key,
    cutout_view_key,
    effect_key,
    input_key,
    sha256_hex,
)
from shared.jobs.model import (
    CUTOUT,
    JobRecord,
    JobRequest,
    Owner,
    StoredObject,
    Webhook,
    new_job_id,
)
from shared.metrics import JOBS_ACCEPTED
from shared.queues import enqueue_effects, enqueue_segment, enqueue_webhook_delivery

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
) -> Submission:
    """Create and queue a job for the submitter; with an Idempotency-Key, a repeat returns
    the first job."""
    submitter = submitter or Submitter()
    owner = submitter.owner
    sha = sha256_hex(data)
    job_id = new_job_id()
    if idempotency_key is not None:
        earlier = svc.idempotency.claim(
            owner.scope, idempotency_key, fingerprint(sha, options), job_id
        )
        if earlier is not None:
            wait_for_job(svc.jobs.exists, earlier)
            return Submission(svc.jobs.get_owned(earlier, owner), replayed=True)
    try:
        with _token_quota(svc, submitter.token), _active_slot(svc, owner.key_id, job_id):
            return Submission(_create_job(svc, job_id, data, sha, options, owner))
    except BaseException:
        if idempotency_key is not None:
            svc.idempotency.release(owner.scope, idempotency_key)
        raise


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
def _active_slot(svc: Services, key_id: str, job_id: str) -> Iterator[None]:
    """The key's unfinished-job slot claimed for the job, and freed if it is not created."""
    _claim_active_slot(svc, key_id, job_id)
    try:
        yield
    except BaseException:
        svc.jobs.release_active_slot(key_id, job_id)
        raise


def _claim_active_slot(svc: Services, owner: str, job_id: str) -> None:
    cap = svc.settings.max_active_jobs_per_key
    if not svc.jobs.claim_active_slot(owner, job_id, cap):
        raise TooManyActiveJobs(
            f"this API key already has {cap} unfinished jobs; wait for some to finish",
            retry_after_s=ACTIVE_CAP_RETRY_AFTER_S,
        )


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
    svc: Services, job_id: str, data: bytes, sha: str, options: JobOptions, owner: Owner
) -> JobRecord:
    cache = svc.cache.scoped(cache_scope(svc.settings.cache_scope, owner.key_id))
    with stage("input"):
        stored_input = _store_input(svc, cache, data, sha)
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
        job = svc.jobs.create(
            job_id, request, options.webhook, owner=owner, cancel_after_s=options.cancel_after_s
        )
        svc.metrics.increment(JOBS_ACCEPTED)
    with stage("cache"):
        hits = _cached_results(svc, cache, request)
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


def _store_input(svc: Services, cache: ResultCache, data: bytes, sha: str) -> StoredObject:
    """The normalised input, decoded and stored once per distinct upload.

    Decoding runs in the process's decode pool, off the event loop that serves
    every other request and stream of this process.
    """
    settings = svc.settings

    def normalised() -> Rendered:
        return svc.decoder.run(_normalise_and_encode, data, settings.max_pixels, settings.max_side)

    return cache.get_or_store(input_key(sha, settings.max_side), normalised).stored


def _normalise_and_encode(data: bytes, max_pixels: int, max_side: int) -> Rendered:
    image = normalise_upload(data, max_pixels, max_side)
    encoded = encode_lossless(image.pixels)
    return Rendered(encoded, INPUT_CONTENT_TYPE, image.width, image.height)


@dataclass(frozen=True)
class CacheHits:
    """What already exists for a request: the model it was made with, the lossless
    cutout the effects start from, and each result found (the cutout in the client's format)."""

    model_id: str = ""
    source_key: str | None = None
    results: dict[str, StoredObject] = field(default_factory=dict)


def _cached_results(svc: Services, cache: ResultCache, request: JobRequest) -> CacheHits:
    model_id = cache.current_model()
    if model_id is None:
        return CacheHits()
    source = cutout_key(request.input_sha256, svc.settings.max_side, model_id)
    view = None
    if cache.lookup(source, "cutout") is not None:
        view = cache.lookup(cutout_view_key(source, request.output))
    if view is None:
        return CacheHits()
    found = {CUTOUT: view}
    for name in request.effect_order:
        key = effect_key(source, name, request.params.get(name, {}), request.output)
        hit = cache.lookup(key, "effect")
        if hit is not None:
            found[name] = hit
    return CacheHits(model_id, source, found)
