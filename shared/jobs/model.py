"""What a job is: its request, its results, their states and its events, as stored and sent."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from shared.encoding import OutputFormat

CUTOUT = "cutout"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    #: Finished, with some results failed.
    PARTIAL = "partial"

    @property
    def finished(self) -> bool:
        return self in FINISHED_JOB_STATUSES


FINISHED_JOB_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.PARTIAL})


class ResultStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class EventType(StrEnum):
    ACCEPTED = "job.accepted"
    STARTED = "job.started"
    RESULT_SUCCEEDED = "result.succeeded"
    RESULT_FAILED = "result.failed"
    FINISHED = "job.finished"


def now() -> float:
    return round(time.time(), 3)


def new_job_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class StoredObject:
    """What is known of an object in storage: enough to describe a result without reading it."""

    key: str
    content_type: str
    byte_size: int
    width: int
    height: int


@dataclass(frozen=True)
class JobRequest:
    """Everything that determines a job's results, fixed at submit."""

    input_sha256: str
    input_key: str
    width: int
    height: int
    effects: tuple[str, ...]
    primary: str | None
    output: OutputFormat
    params: dict[str, dict[str, Any]]

    @property
    def effect_order(self) -> tuple[str, ...]:
        """The primary effect first, then the others in the order asked for."""
        if self.primary is None:
            return self.effects
        return (self.primary, *(name for name in self.effects if name != self.primary))

    @property
    def result_names(self) -> tuple[str, ...]:
        return (CUTOUT, *self.effect_order)

    def to_json(self) -> str:
        data = asdict(self)
        data["effects"] = list(self.effects)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> JobRequest:
        data = json.loads(raw)
        data["effects"] = tuple(data["effects"])
        data["output"] = OutputFormat(**data["output"])
        return cls(**data)


@dataclass
class ResultRecord:
    """The state of one result (the cutout or one effect) of a job."""

    name: str
    status: ResultStatus = ResultStatus.PENDING
    key: str | None = None
    #: For the cutout: the lossless PNG the effects start from (key is the client's format).
    source_key: str | None = None
    content_type: str | None = None
    byte_size: int | None = None
    width: int | None = None
    height: int | None = None
    cached: bool = False
    attempts: int = 0
    error: dict[str, str] | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.status = ResultStatus(self.status)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> ResultRecord:
        return cls(**json.loads(raw))


@dataclass(frozen=True)
class Webhook:
    """Where to POST a job's events, which types, and whose secret signs them."""

    url: str
    events: tuple[EventType, ...]
    key_id: str = ""

    def to_json(self) -> str:
        return json.dumps({"url": self.url, "events": list(self.events), "key_id": self.key_id})

    @classmethod
    def from_json(cls, raw: str) -> Webhook:
        data = json.loads(raw)
        events = tuple(EventType(name) for name in data["events"])
        return cls(data["url"], events, data.get("key_id", ""))


@dataclass
class JobRecord:
    id: str
    status: JobStatus
    created_at: float
    request: JobRequest
    results: dict[str, ResultRecord]
    model_id: str | None = None
    finished_at: float | None = None
    webhook: Webhook | None = None
    #: The id of the API key that submitted the job ("" when keys are off).
    owner: str = ""

    @property
    def finished(self) -> bool:
        return self.status.finished

    @property
    def total_s(self) -> float | None:
        if self.finished_at is None:
            return None
        return round(self.finished_at - self.created_at, 3)
