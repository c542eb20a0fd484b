"""Reading a job's event stream: replay from any id, then wait for new entries."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

from shared.errors import InvalidEventId
from shared.jobs.keys import events_key
from shared.jobs.model import EventType

STREAM_ID = re.compile(r"^\d{1,20}(-\d{1,20})?$")
READ_BATCH = 100
#: Redis stream ids are two unsigned 64-bit numbers.
_STREAM_ID_PART_LIMIT = 2**64


def check_event_id(raw: str) -> str:
    """`raw` if it is a stream id Redis accepts; InvalidEventId otherwise."""
    if not STREAM_ID.match(raw) or any(
        int(part) >= _STREAM_ID_PART_LIMIT for part in raw.split("-")
    ):
        raise InvalidEventId(f"not an event id: {raw[:40]!r}")
    return raw


@dataclass(frozen=True)
class JobEvent:
    id: str
    type: EventType
    data: dict[str, Any]

    @property
    def is_final(self) -> bool:
        return self.type == EventType.FINISHED


def read_events(
    client: redis.Redis, job_id: str, after: str, block_ms: int | None
) -> list[JobEvent]:
    """Events after `after`; waits up to block_ms for one when there are none yet.

    `client` decodes replies (decode_responses=True).
    """
    reply: Any = client.xread({events_key(job_id): after}, count=READ_BATCH, block=block_ms)
    return [
        JobEvent(id=entry_id, type=EventType(fields["type"]), data=json.loads(fields["data"]))
        for _stream, entries in reply or []
        for entry_id, fields in entries
    ]


def follow_events(
    client: redis.Redis, job_id: str, after: str, block_ms: int | None
) -> Iterator[JobEvent | None]:
    """Every event after `after` until the final one; None each time block_ms passes idle
    (at once when block_ms is None)."""
    cursor = after
    while True:
        batch = read_events(client, job_id, cursor, block_ms)
        if not batch:
            yield None
            continue
        for event in batch:
            cursor = event.id
            yield event
            if event.is_final:
                return
