"""What clients see of a result or an event: small JSON with a fresh signed URL, never bytes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urljoin

from shared.jobs.model import JobRecord, ResultRecord, ResultStatus
from shared.storage import Storage


def result_view(
    result: ResultRecord, storage: Storage, url_ttl_s: int, url_base: str = ""
) -> dict[str, Any]:
    """url_base makes relative (local-storage) links absolute; GCS URLs are left as they are."""
    shown: dict[str, Any] = {"status": result.status, "cached": result.cached}
    if result.status == ResultStatus.SUCCEEDED and result.key:
        signed = storage.signed_url(result.key, url_ttl_s)
        shown.update(
            url=urljoin(url_base, signed.url) if url_base else signed.url,
            url_expires_at=signed.expires_at,
            content_type=result.content_type,
            bytes=result.byte_size,
            width=result.width,
            height=result.height,
        )
    if result.subject is not None:
        shown["subject"] = result.subject
    if result.error:
        shown["error"] = result.error
    shown["timings"] = result.timings
    return shown


def event_view(
    data: Mapping[str, Any], storage: Storage, url_ttl_s: int, url_base: str = ""
) -> dict[str, Any]:
    """An event's data as sent: a result event's stored record becomes its view, freshly signed."""
    shown = dict(data)
    if "result" in shown:
        record = ResultRecord(**shown["result"])
        shown["result"] = result_view(record, storage, url_ttl_s, url_base)
    return shown


def job_timings(job: JobRecord) -> dict[str, float]:
    timings = {"queued_at": job.created_at}
    if job.finished_at is not None and job.total_s is not None:
        timings["finished_at"] = job.finished_at
        timings["total_s"] = job.total_s
    return timings


def job_view(
    job: JobRecord,
    storage: Storage,
    url_ttl_s: int,
    links: Mapping[str, str],
    url_base: str = "",
) -> dict[str, Any]:
    """A job as clients see it; `links` are the routes that serve it (the API knows them)."""
    shown: dict[str, Any] = {
        "id": job.id,
        "status": job.status,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "effects": list(job.request.effect_order),
        "primary": job.request.primary,
        "format": job.request.output.name,
        "quality": job.request.output.quality,
        "input": {"width": job.request.width, "height": job.request.height},
        "options": job.request.options.shown(),
        "timings": job_timings(job),
        "results": {
            name: result_view(result, storage, url_ttl_s, url_base)
            for name, result in job.results.items()
        },
        "links": dict(links),
    }
    if job.cancel_at is not None:
        shown["cancel_at"] = job.cancel_at
    return shown
