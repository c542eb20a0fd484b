"""Turning a validated upload into a job: normalise, hash, store, look in the cache, enqueue."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from api.idempotency import wait_for_job
from api.images import BACKGROUND, PHOTO, UploadPart, normalise_upload
from api.middleware import stage
from api.services import Services
from api.tokens import ClientToken
from api.validation import JobOptions
from shared.cache import Rendered, ResultCache, cache_scope
from shared.encoding import encode_lossless
from shared.errors import QuotaExhausted, TooManyActiveJobs
from shared.hashing import canonical_json, input_key, sha256_hex
from shared.jobs import plan
from shared.jobs.model import JobRecord, JobRequest, Owner, StoredObject, new_job_id
from shared.metrics import JOBS_ACCEPTED
from shared.queues import enqueue_webhook_delivery

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
) -> Submission:
    """Create and queue a job for the submitter (with `background`, the uploaded image
    behind the subject); with an Idempotency-Key, a repeat returns the first job."""
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
        with _token_quota(svc, submitter.token), _active_slot(svc, owner.key_id, job_id):
            return Submission(
                _create_job(svc, job_id, Upload(data, sha, background), options, owner)
            )
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
    }
    return sha256_hex(canonical_json(described).encode())


@dataclass(frozen=True)
class Upload:
    """The photo's bytes and digest, and the uploaded background's bytes, if any."""

    data: bytes
    sha256: str
    background: bytes | None = None


def _create_job(
    svc: Services, job_id: str, upload: Upload, options: JobOptions, owner: Owner
) -> JobRecord:
    cache = svc.cache.scoped(cache_scope(svc.settings.cache_scope, owner.key_id))
    output_options = options.output_options
    with stage("input"):
        stored_input = _store_input(svc, cache, upload.data, upload.sha256)
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
    )
    with stage("record"):
        job = svc.jobs.create(
            job_id, request, options.webhook, owner=owner, cancel_after_s=options.cancel_after_s
        )
        svc.metrics.increment(JOBS_ACCEPTED)
    with stage("cache"):
        done = plan.find_done(cache, request, svc.settings.max_side)
        svc.jobs.finish_from_cache(
            job,
            done.results,
            done.model_id,
            done.source_key,
            request.subject_in_upload(done.subject),
        )
    with stage("enqueue"):
        plan.enqueue(svc.celery, job_id, plan.after_submit(request, done.results))
        if options.webhook is not None:
            enqueue_webhook_delivery(svc.celery, job_id)
    return svc.jobs.get(job_id) if done.results else job


def _store_input(
    svc: Services, cache: ResultCache, data: bytes, sha: str, part: UploadPart = PHOTO
) -> StoredObject:
    """The normalised input (the photo, or the `part` it came in), decoded and stored once
    per distinct upload; its errors name its part.

    Decoding runs in the process's decode pool, off the event loop that serves
    every other request and stream of this process.
    """
    settings = svc.settings

    def normalised() -> Rendered:
        return svc.decoder.run(
            _normalise_and_encode, data, settings.max_pixels, settings.max_side, part
        )

    return cache.get_or_store(input_key(sha, settings.max_side), normalised).stored


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
    )
