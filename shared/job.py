"""What a job is: its request, its results and their states, as stored and sent."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from shared.encoding import OutputFormat

CUTOUT = "cutout"

# Job states.
QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
PARTIAL = "partial"  # finished, some results failed
FINISHED_STATES = (SUCCEEDED, FAILED, PARTIAL)

# Result states.
PENDING = "pending"
RESULT_RUNNING = "running"
RESULT_SUCCEEDED = "succeeded"
RESULT_FAILED = "failed"


def now() -> float:
    return round(time.time(), 3)


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
    status: str = PENDING
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

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> ResultRecord:
        return cls(**json.loads(raw))


@dataclass(frozen=True)
class Webhook:
    """Where to POST a job's events, which types, and whose secret signs them."""

    url: str
    events: tuple[str, ...]
    key_id: str = ""

    def to_json(self) -> str:
        return json.dumps({"url": self.url, "events": list(self.events), "key_id": self.key_id})

    @classmethod
    def from_json(cls, raw: str) -> Webhook:
        data = json.loads(raw)
        return cls(data["url"], tuple(data["events"]), data.get("key_id", ""))


@dataclass
class JobRecord:
    id: str
    status: str
    created_at: float
    request: JobRequest
    results: dict[str, ResultRecord]
    model_id: str | None = None
    finished_at: float | None = None
    webhook: Webhook | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATES
