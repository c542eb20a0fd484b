"""Where a job lives in Redis: its hash, its set of unfinished results, its event stream.

Every key of one job carries the job id as a hash tag (`{...}`), so they all fall in one
slot of a Redis Cluster and the job scripts, which touch several of them, may run there.
"""

from __future__ import annotations

KEY_PREFIX = "cutfx:job:"


def job_key(job_id: str) -> str:
    return f"{KEY_PREFIX}{{{job_id}}}"


def pending_key(job_id: str) -> str:
    return f"{job_key(job_id)}:pending"


def events_key(job_id: str) -> str:
    return f"{job_key(job_id)}:events"


def active_jobs_key(owner: str) -> str:
    """The unfinished jobs of one API key (a sorted set scored by submit time)."""
    return f"cutfx:owner:{owner}:active"


def webhook_cursor_key(job_id: str) -> str:
    return f"{job_key(job_id)}:webhook-cursor"


def webhook_lock_key(job_id: str) -> str:
    return f"{job_key(job_id)}:webhook-lock"


#: Jobs with a Cancel-After deadline, scored by it; the workers cancel those past due.
DEADLINES_KEY = "cutfx:deadlines"


def token_jobs_key(token_id: str) -> str:
    """How many jobs one client token has submitted (its quota's counter)."""
    return f"cutfx:token:{token_id}:jobs"
