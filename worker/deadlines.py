"""Cancel-After: the unfinished work of a job past its deadline is canceled.

Every worker process sweeps the deadline list each second; whoever takes a job
off it (ZREM answers 1 to one caller only) cancels it. A task that comes up
for a job past its deadline cancels it too, so a late sweep costs no work.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from shared.jobs.model import now
from shared.jobs.store import JobStore
from shared.logging import job_context
from worker.periodic import Periodic

logger = logging.getLogger(__name__)

DEADLINE_SWEEP_INTERVAL_S = 1.0
#: Jobs canceled per sweep at most; the rest wait a second.
DEADLINE_SWEEP_BATCH = 100
DEADLINE_MESSAGE = "canceled: the job's Cancel-After deadline passed"

Canceled = Callable[[str], None]


def cancel_past_deadline(jobs: JobStore, job_id: str) -> bool:
    """Cancel the job's unfinished work; True when this call canceled something."""
    canceled = jobs.cancel(job_id, DEADLINE_MESSAGE)
    if canceled:
        with job_context(job_id):
            logger.info("job canceled at its deadline")
    return canceled


def cancel_overdue(jobs: JobStore, on_canceled: Canceled, at: float | None = None) -> int:
    """Cancel the jobs whose deadline has passed; the number canceled."""
    count = 0
    for job_id in jobs.past_deadline(now() if at is None else at, DEADLINE_SWEEP_BATCH):
        if jobs.claim_deadline(job_id) and cancel_past_deadline(jobs, job_id):
            on_canceled(job_id)
            count += 1
    return count


class DeadlineSweeper(Periodic):
    name = "deadline sweep"

    def __init__(self, jobs: JobStore, on_canceled: Canceled) -> None:
        super().__init__(DEADLINE_SWEEP_INTERVAL_S)
        self.jobs = jobs
        self.on_canceled = on_canceled

    def tick(self) -> None:
        cancel_overdue(self.jobs, self.on_canceled)
