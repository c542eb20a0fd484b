"""What clients see of a job: small JSON, signed URLs, never image bytes."""

from __future__ import annotations

from typing import Any

from flask import request, url_for

from shared.job import JobRecord, ResultRecord
from shared.job_view import result_view
from shared.storage import Storage


def job_links(job_id: str) -> dict[str, str]:
    return {
        "self": url_for("jobs.get_job", job_id=job_id, _external=True),
        "events": url_for("events.job_events", job_id=job_id, _external=True),
    }


def present_result(result: ResultRecord, storage: Storage, url_ttl_s: int) -> dict[str, Any]:
    return result_view(result, storage, url_ttl_s, url_base=request.host_url)


def job_timings(job: JobRecord) -> dict[str, float]:
    timings = {"queued_at": job.created_at}
    if job.finished_at is not None:
        timings["finished_at"] = job.finished_at
        timings["total_s"] = round(job.finished_at - job.created_at, 3)
    return timings


def present_job(job: JobRecord, storage: Storage, url_ttl_s: int) -> dict[str, Any]:
    return {
        "id": job.id,
        "status": job.status,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "effects": list(job.request.effect_order),
        "primary": job.request.primary,
        "format": job.request.output.name,
        "quality": job.request.output.quality,
        "input": {"width": job.request.width, "height": job.request.height},
        "timings": job_timings(job),
        "results": {
            name: present_result(result, storage, url_ttl_s) for name, result in job.results.items()
        },
        "links": job_links(job.id),
    }
