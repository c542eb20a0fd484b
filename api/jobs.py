"""POST /v1/jobs and GET /v1/jobs/<id>."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from api.presenters import job_links, present_job
from api.services import services
from api.submission import parse_options, read_upload, submit_job

blueprint = Blueprint("jobs", __name__, url_prefix="/v1/jobs")


@blueprint.post("")
def create_job() -> tuple[dict[str, Any], int, dict[str, str]]:
    svc = services()
    options = parse_options(request.form)
    data = read_upload(request.files.get("image"), svc.settings.max_upload_bytes)
    job = submit_job(svc, data, options)
    links = job_links(job.id)
    body = {"id": job.id, "status": job.status, "links": links}
    return body, 202, {"Location": links["self"]}


@blueprint.get("/<job_id>")
def get_job(job_id: str) -> dict[str, Any]:
    svc = services()
    return present_job(svc.jobs.get(job_id), svc.storage, svc.settings.url_ttl_s)
