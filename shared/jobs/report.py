"""What happens once per job when its last result lands: one log line and the job metrics."""

from __future__ import annotations

import logging

from shared.jobs.model import JobRecord
from shared.logging import job_context
from shared.metrics import JOB_SECONDS, JOBS_FINISHED, Metrics

logger = logging.getLogger("cutfx.jobs")


class FinishedJobReporter:
    """The job store's `on_job_finished`: counts and logs each job it closes."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def __call__(self, job: JobRecord) -> None:
        total_s = job.total_s or 0.0
        self.metrics.increment(JOBS_FINISHED, {"status": job.status})
        self.metrics.observe(JOB_SECONDS, total_s)
        with job_context(job.id):
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
