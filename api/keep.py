"""Keeping what was ordered: POST /v1/jobs/<id>/keep copies a finished job's results where
neither CUTFX_RESULT_TTL_S nor the storage sweep reaches, and keeps the job's record;
DELETE /v1/jobs/<id>/keep releases them. Owner-only and idempotent, like every job route.

A kept copy is recorded only once it is stored: a storage fault part-way leaves nothing
marked kept (and the copies of that call are removed again).
"""

from __future__ import annotations

import contextlib
import logging
import mimetypes
from typing import Any

from flask import Blueprint, request

from api.jobs import present_job
from api.middleware import Services, owner, services
from shared.errors import (
    CutfxError,
    InvalidParameter,
    JobUnfinished,
    ObjectNotFound,
    ResultExpired,
    ResultNotReady,
)
from shared.jobs.model import JobRecord, ResultStatus, StoredObject
from shared.storage import KEPT_PREFIX
from shared.telemetry import job_context

logger = logging.getLogger(__name__)

blueprint = Blueprint("keep", __name__, url_prefix="/v1/jobs")

RESULTS_FIELD = "results"


@blueprint.post("/<job_id>/keep")
def keep(job_id: str) -> dict[str, Any]:
    svc = services()
    job = svc.jobs.get_owned(job_id, owner())
    names = wanted_results(job, requested_names())
    if not job.finished:
        raise JobUnfinished(f"job {job_id} is still {job.status}: keep it once it has finished")
    missing = [name for name in names if name not in job.kept]
    if missing:
        with job_context(job_id):
            copies = copy_results(svc, job, missing)
            svc.jobs.mark_kept(job_id, {**job.kept, **copies})
            svc.usage.add(job.owner, {"bytes_kept": sum(c.byte_size for c in copies.values())})
            logger.info("results kept", extra={"results": sorted(copies)})
        job = svc.jobs.get(job_id)
    return present_job(job, svc)


@blueprint.delete("/<job_id>/keep")
def release(job_id: str) -> dict[str, Any]:
    svc = services()
    job = svc.jobs.get_owned(job_id, owner())
    if job.kept:
        # Unmarked first: a copy whose removal fails is left over, never pointed at.
        svc.jobs.release_kept(job_id)
        for copy in job.kept.values():
            svc.kept_storage.delete(copy.key)
        job = svc.jobs.get(job_id)
    return present_job(job, svc)


def requested_names() -> list[str] | None:
    """The results named in a JSON body ({"results": [...]}) or a form field
    (results=cutout,color); None when none are named."""
    if request.is_json:
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or set(body) - {RESULTS_FIELD}:
            raise InvalidParameter('the body is {"results": [names]}', field=RESULTS_FIELD)
        named = body.get(RESULTS_FIELD)
        if named is None:
            return None
        if not isinstance(named, list) or not all(isinstance(n, str) for n in named):
            raise InvalidParameter("results must be a list of names", field=RESULTS_FIELD)
        return named
    raw = request.form.get(RESULTS_FIELD, "")
    named = [part.strip() for part in raw.split(",") if part.strip()]
    return named or None


def wanted_results(job: JobRecord, named: list[str] | None) -> list[str]:
    """The results to keep: those named, each a succeeded result of the job; else every
    succeeded one."""
    succeeded = [n for n, r in job.results.items() if r.status == ResultStatus.SUCCEEDED]
    if named is None:
        if not succeeded:
            raise ResultNotReady(f"job {job.id} has no result to keep")
        return succeeded
    for name in named:
        if name not in job.results:
            known = ", ".join(job.results)
            raise InvalidParameter(
                f"job {job.id} has no result {name!r} ({known})", field=RESULTS_FIELD
            )
        if name not in succeeded:
            raise ResultNotReady(f"result {name!r} of job {job.id} did not succeed")
    return list(dict.fromkeys(named))


def copy_results(svc: Services, job: JobRecord, names: list[str]) -> dict[str, StoredObject]:
    """Each named result copied into the kept area; on any failure, the copies made here
    are removed and the error raised."""
    copies: dict[str, StoredObject] = {}
    try:
        for name in names:
            copies[name] = _copy(svc, job, name)
    except CutfxError:
        for copy in copies.values():
            with contextlib.suppress(CutfxError):
                svc.kept_storage.delete(copy.key)
        raise
    return copies


def _copy(svc: Services, job: JobRecord, name: str) -> StoredObject:
    result = job.results[name]
    if result.key is None or result.content_type is None:
        raise ResultNotReady(f"result {name!r} of job {job.id} has no file")
    try:
        data = svc.storage.get(result.key)
    except ObjectNotFound:
        raise ResultExpired(f"result {name!r} of job {job.id} expired before it was kept") from None
    extension = mimetypes.guess_extension(result.content_type) or ""
    key = f"{KEPT_PREFIX}/{job.id}/{name}{extension}"
    svc.kept_storage.put(key, data, result.content_type)
    return StoredObject(key, result.content_type, len(data), result.width or 0, result.height or 0)
