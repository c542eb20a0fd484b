"""What clients see of a job, with the API's own links and absolute download URLs."""

from __future__ import annotations

from typing import Any

from flask import request, url_for

from shared.jobs.model import JobRecord
from shared.jobs.view import job_view
from shared.storage import Storage


def job_links(job_id: str) -> dict[str, str]:
    return {
        "self": url_for("jobs.get_job", job_id=job_id, _external=True),
        "events": url_for("events.job_events", job_id=job_id, _external=True),
    }


def present_job(job: JobRecord, storage: Storage, url_ttl_s: int) -> dict[str, Any]:
    return job_view(job, storage, url_ttl_s, job_links(job.id), url_base=request.host_url)
