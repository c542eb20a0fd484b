"""What happens once per job when its last result lands: one log line and the job metrics."""

from __future__ import annotations

import logging

from shared.jobstore import JobStore
from shared.logging import job_context
from shared.metrics import JOB_SECONDS, JOBS_FINISHED, Metrics

logger = logging.getLogger("cutfx.jobs")


def summarise_finished_jobs(store: JobStore, metrics: Metrics) -> JobStore:
    """Make `store` log and count each job it closes, whichever process closes it."""

    def on_job_finished(job_id: str) -> None:
        job = store.get(job_id)
        total_s = round((job.finished_at or job.created_at) - job.created_at, 3)
        metrics.increment(JOBS_FINISHED, {"status": job.status})
        metrics.observe(JOB_SECONDS, total_s)
        with job_context(job_id):
            logger.info(
                "job finished",
                extra={
                    "status": job.status,
                    "total_s": total_s,
                    "results": {
                        name: {"status": r.status, "cached": r.cached, **r.timings}
                        for name, r in job.results.items()
                    },
                },
            )

    store.on_job_finished = on_job_finished
    return store
