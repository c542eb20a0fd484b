"""The job: its model and vocabulary, the store that alone writes it, its events and views."""

from shared.jobs.model import (
    CUTOUT,
    PREVIEW,
    EventType,
    JobRecord,
    JobRequest,
    JobStatus,
    ResultRecord,
    ResultStatus,
    StoredObject,
    Webhook,
    new_job_id,
    now,
)
from shared.jobs.store import (
    START_OF_STREAM,
    STREAM_ID,
    JobEvent,
    JobStore,
    follow_events,
    read_events,
)

__all__ = [
    "CUTOUT",
    "PREVIEW",
    "START_OF_STREAM",
    "STREAM_ID",
    "EventType",
    "JobEvent",
    "JobRecord",
    "JobRequest",
    "JobStatus",
    "JobStore",
    "ResultRecord",
    "ResultStatus",
    "StoredObject",
    "Webhook",
    "follow_events",
    "new_job_id",
    "now",
    "read_events",
]
