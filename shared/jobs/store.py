"""The job as one aggregate: where it lives in Redis, the Lua scripts that change it, its
event stream, and the store that alone reads and writes it.

A job is a hash, a set of unfinished results and an event stream. Every key of one job
carries the job id as a hash tag (`{...}`), so they all fall in one slot of a Redis
Cluster and the job scripts, which touch several of them, may run there.

Every change of a result is written together with its event in one Lua script, so a
subscriber never sees a state without its event or an event without its state, and the
result that finishes last (whichever process records it) closes the job and runs the
store's `on_job_finished` with the closed job. Every state and event name in the scripts
is a `$placeholder` substituted from JobStatus, ResultStatus and EventType, so the
scripts cannot drift from the Python side: a placeholder without a value, or one left
over, stops the import with ScriptVocabularyError.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from string import Template
from typing import Any

import redis

from shared.errors import InvalidEventId, JobNotFound, ScriptVocabularyError
from shared.jobs.model import (
    CUTOUT,
    EventType,
    JobRecord,
    JobRequest,
    JobStatus,
    Owner,
    ResultRecord,
    ResultStatus,
    StoredObject,
    Webhook,
    now,
)

# --- where a job lives -------------------------------------------------------------------

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


# --- the scripts that change a job ---------------------------------------------------------

RESULT_FIELD_PREFIX = "result:"


# The close count, shared by every script that closes a job: its results by final state.
# Included at the top of a script; KEYS[1] is the job hash.
_COUNT_RESULTS = """
local function count_results()
  local counts = {failed = 0, succeeded = 0}
  local fields = redis.call('HGETALL', KEYS[1])
  for i = 1, #fields, 2 do
    if string.sub(fields[i], 1, $result_prefix_length) == '$result_prefix' then
      local status = cjson.decode(fields[i + 1])['status']
      if status == '$result_failed' then counts.failed = counts.failed + 1
      elseif status == '$result_succeeded' then counts.succeeded = counts.succeeded + 1 end
    end
  end
  return counts.failed, counts.succeeded
end
"""

# KEYS: job hash, pending set, event stream
# ARGV: result name, result json, event type, event json, ttl seconds, now, stream max length
_FINISH_RESULT = """
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], '$result_prefix' .. ARGV[1], ARGV[2], 'updated_at', ARGV[6])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', 'type', ARGV[3], 'data', ARGV[4])
if redis.call('SCARD', KEYS[2]) == 0 then
  local failed, succeeded = count_results()
  local final = '$job_succeeded'
  if succeeded == 0 then final = '$job_failed' elseif failed > 0 then final = '$job_partial' end
  redis.call('HSET', KEYS[1], 'status', final, 'finished_at', ARGV[6])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', 'type', '$event_finished',
    'data', cjson.encode({status = final, succeeded = succeeded, failed = failed}))
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('EXPIRE', KEYS[3], ARGV[5])
  return 2
end
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[3], ARGV[5])
return 1
"""

# KEYS: job hash, pending set, event stream
# ARGV: result name, result json, ttl, now, stream max length
_START_RESULT = """
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], '$result_prefix' .. ARGV[1], ARGV[2], 'updated_at', ARGV[4])
if redis.call('HGET', KEYS[1], 'status') == '$job_queued' then
  redis.call('HSET', KEYS[1], 'status', '$job_running')
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'type', '$event_started',
    'data', cjson.encode({status = '$job_running'}))
end
return 1
"""

# KEYS: job hash, pending set, event stream
# ARGV: now, ttl seconds, stream max length, error code, error message
# Every unfinished result (queued or running) is canceled with its event, then the job
# closes as canceled; a task that comes up for it later finds nothing pending and skips.
_CANCEL_JOB = """
local names = redis.call('SMEMBERS', KEYS[2])
if #names == 0 then
  return 0
end
table.sort(names)
for _, name in ipairs(names) do
  local field = '$result_prefix' .. name
  local result = cjson.decode(redis.call('HGET', KEYS[1], field))
  result['status'] = '$result_canceled'
  result['error'] = {code = ARGV[4], message = ARGV[5]}
  result['timings']['finished_at'] = tonumber(ARGV[1])
  redis.call('HSET', KEYS[1], field, cjson.encode(result))
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'type', '$event_result_canceled',
    'data', cjson.encode({name = name, result = result}))
end
redis.call('DEL', KEYS[2])
local failed, succeeded = count_results()
redis.call('HSET', KEYS[1], 'status', '$job_canceled', 'finished_at', ARGV[1],
  'updated_at', ARGV[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'type', '$event_finished',
  'data', cjson.encode({status = '$job_canceled', succeeded = succeeded, failed = failed,
    canceled = #names}))
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[2])
return #names
"""

VOCABULARY: dict[str, str] = {
    "result_prefix": RESULT_FIELD_PREFIX,
    "result_prefix_length": str(len(RESULT_FIELD_PREFIX)),
    "result_failed": ResultStatus.FAILED,
    "result_succeeded": ResultStatus.SUCCEEDED,
    "result_canceled": ResultStatus.CANCELED,
    "job_queued": JobStatus.QUEUED,
    "job_running": JobStatus.RUNNING,
    "job_succeeded": JobStatus.SUCCEEDED,
    "job_failed": JobStatus.FAILED,
    "job_partial": JobStatus.PARTIAL,
    "job_canceled": JobStatus.CANCELED,
    "event_started": EventType.STARTED,
    "event_finished": EventType.FINISHED,
    "event_result_canceled": EventType.RESULT_CANCELED,
}

#: _FINISH_RESULT's answer when the result it recorded was the job's last.
JOB_CLOSED = 2


def render_script(source: str, vocabulary: dict[str, str] = VOCABULARY) -> str:
    """The script with its vocabulary filled in; raises ScriptVocabularyError on any gap."""
    try:
        rendered = Template(source).substitute(vocabulary)
    except (KeyError, ValueError) as exc:
        raise ScriptVocabularyError(f"a job script names an unknown word: {exc}") from None
    leftover = re.search(r"\$\w+", rendered)
    if leftover:
        raise ScriptVocabularyError(f"a job script keeps a placeholder: {leftover.group()}")
    return rendered


FINISH_RESULT = render_script(_COUNT_RESULTS + _FINISH_RESULT)
START_RESULT = render_script(_START_RESULT)
CANCEL_JOB = render_script(_COUNT_RESULTS + _CANCEL_JOB)


# --- reading a job's event stream: replay from any id, then wait for new entries ------------

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


# --- the store --------------------------------------------------------------------------------

#: Events kept per job; a job makes a handful, this only bounds a runaway.
STREAM_MAX_LEN = 1000
#: The event id before a job's first event.
START_OF_STREAM = "0-0"
#: The error code of a canceled result.
CANCELED_CODE = "canceled"
#: The error of the results a failed cutout leaves without their source.
CUTOUT_FAILED_CODE = "cutout_failed"
CUTOUT_FAILED_MESSAGE = "background removal failed"

JobFinished = Callable[[JobRecord], None]
#: The job hash's field of kept copies (JSON: result name -> its StoredObject).
KEPT_FIELD = "kept"

# A capped set of slots, each scored by when it was last claimed or renewed: an owner's
# unfinished jobs here, a key's open streams in the API (api/middleware.py).
# KEYS: the set. ARGV: member, now, oldest score still counted, cap. Entries older than
# that are dropped first, so a slot whose holder vanished frees itself. Returns how many
# the set holds with this one (its rank), or 0 when it was full.
CLAIM_COUNTED_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return redis.call('ZCARD', KEYS[1])
"""


class JobStore:
    def __init__(
        self, client: redis.Redis, ttl_s: int, on_job_finished: JobFinished | None = None
    ) -> None:
        """`client` must decode replies (decode_responses=True): every value here is text."""
        self.redis = client
        self.ttl_s = ttl_s
        self._on_job_finished = on_job_finished
        self._finish = client.register_script(FINISH_RESULT)
        self._start = client.register_script(START_RESULT)
        self._claim_slot = client.register_script(CLAIM_COUNTED_SLOT)
        self._cancel = client.register_script(CANCEL_JOB)

    # --- reading ---------------------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord:
        fields: Any = self.redis.hgetall(job_key(job_id))
        if not fields:
            raise JobNotFound(f"no job {job_id}")
        request = JobRequest.from_json(fields["request"])
        results = {
            name: ResultRecord.from_json(fields[RESULT_FIELD_PREFIX + name])
            for name in request.result_names
        }
        finished_at = fields.get("finished_at")
        webhook = fields.get("webhook")
        cancel_at = fields.get("cancel_at")
        kept = json.loads(fields.get(KEPT_FIELD) or "{}")
        return JobRecord(
            id=job_id,
            status=JobStatus(fields["status"]),
            created_at=float(fields["created_at"]),
            request=request,
            results=results,
            model_id=fields.get("model_id"),
            finished_at=float(finished_at) if finished_at else None,
            webhook=Webhook.from_json(webhook) if webhook else None,
            owner=fields.get("owner", ""),
            token_id=fields.get("token_id", ""),
            cancel_at=float(cancel_at) if cancel_at else None,
            kept={name: StoredObject(**copy) for name, copy in kept.items()},
        )

    def get_owned(self, job_id: str, owner: Owner) -> JobRecord:
        """The job, if `owner` may see it; anyone else gets JobNotFound, as for no job."""
        job = self.get(job_id)
        if not job.owned_by(owner):
            raise JobNotFound(f"no job {job_id}")
        return job

    def require_owned(self, job_id: str, owner: Owner) -> None:
        """JobNotFound unless the job exists and `owner` may see it."""
        stored: Any = self.redis.hmget(job_key(job_id), ["owner", "token_id"])
        key_id, token_id = stored
        if key_id is None or not owner.may_see(key_id, token_id or ""):
            raise JobNotFound(f"no job {job_id}")

    def status_of(self, job_id: str) -> JobStatus | None:
        """The job's status; None when there is no such job (or it expired)."""
        status: Any = self.redis.hget(job_key(job_id), "status")
        return None if status is None else JobStatus(status)

    def is_finished(self, job_id: str) -> bool:
        status = self.status_of(job_id)
        return status is not None and status.finished

    def exists(self, job_id: str) -> bool:
        return bool(self.redis.exists(job_key(job_id)))

    def webhook(self, job_id: str) -> Webhook | None:
        raw: Any = self.redis.hget(job_key(job_id), "webhook")
        return Webhook.from_json(raw) if raw else None

    def last_event_id(self, job_id: str) -> str:
        newest: Any = self.redis.xrevrange(events_key(job_id), count=1)
        return str(newest[0][0]) if newest else START_OF_STREAM

    def unfinished(self, job_id: str) -> set[str]:
        members: Any = self.redis.smembers(pending_key(job_id))
        return set(members)

    # --- writing ---------------------------------------------------------------------------

    def claim_active_slot(self, owner: str, job_id: str, cap: int) -> int:
        """Count a new unfinished job against its owner's cap: how many the owner has now,
        this one included (its rank, for fair share), or 0 when the cap is reached."""
        current = now()
        claimed = self._claim_slot(
            keys=[active_jobs_key(owner)], args=[job_id, current, current - self.ttl_s, cap]
        )
        return int(claimed)

    def release_active_slot(self, owner: str, job_id: str) -> None:
        self.redis.zrem(active_jobs_key(owner), job_id)

    def create(
        self,
        job_id: str,
        request: JobRequest,
        webhook: Webhook | None = None,
        owner: Owner | None = None,
        cancel_after_s: float | None = None,
    ) -> JobRecord:
        """Record a queued job; with `cancel_after_s`, what is unfinished then is canceled."""
        owner = owner or Owner()
        created_at = now()
        results = {
            name: ResultRecord(name=name, timings={"queued_at": created_at})
            for name in request.result_names
        }
        mapping: dict[str, Any] = {
            "status": JobStatus.QUEUED,
            "created_at": created_at,
            "updated_at": created_at,
            "request": request.to_json(),
            "owner": owner.key_id,
            "token_id": owner.token_id,
        }
        cancel_at = None if cancel_after_s is None else round(created_at + cancel_after_s, 3)
        if cancel_at is not None:
            mapping["cancel_at"] = cancel_at
        mapping.update({RESULT_FIELD_PREFIX + name: r.to_json() for name, r in results.items()})
        if webhook is not None:
            mapping["webhook"] = webhook.to_json()
        accepted = {
            "status": JobStatus.QUEUED,
            "effects": list(request.effect_order),
            "primary": request.primary,
        }
        keys = _keys(job_id)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys[0], mapping=mapping)  # type: ignore[arg-type]
            pipe.sadd(keys[1], *request.result_names)
            pipe.xadd(
                keys[2],
                {"type": EventType.ACCEPTED, "data": json.dumps(accepted)},
                maxlen=STREAM_MAX_LEN,
                approximate=True,
            )
            for key in keys:
                pipe.expire(key, self.ttl_s)
            pipe.execute()
        if cancel_at is not None:
            # Outside the transaction: the deadlines index lies in a slot of its own on a
            # Redis Cluster. A job whose deadline entry is missing still carries cancel_at.
            self.redis.zadd(DEADLINES_KEY, {job_id: cancel_at})
        return JobRecord(
            job_id,
            JobStatus.QUEUED,
            created_at,
            request,
            results,
            webhook=webhook,
            owner=owner.key_id,
            token_id=owner.token_id,
            cancel_at=cancel_at,
        )

    def set_model_id(self, job_id: str, model_id: str) -> None:
        self.redis.hset(job_key(job_id), "model_id", model_id)

    def start_result(self, job_id: str, result: ResultRecord) -> bool:
        """Mark a result running (and the job with it); False when it already finished."""
        result.status = ResultStatus.RUNNING
        result.attempts += 1
        result.timings["started_at"] = now()
        started = self._start(
            keys=_keys(job_id),
            args=[result.name, result.to_json(), self.ttl_s, now(), STREAM_MAX_LEN],
        )
        return bool(started)

    def succeed_result(
        self,
        job_id: str,
        result: ResultRecord,
        stored: StoredObject,
        *,
        cached: bool,
        timings: Mapping[str, float] | None = None,
        source_key: str | None = None,
        subject: dict[str, float] | None = None,
        checks: list[dict[str, Any]] | None = None,
        escalation: dict[str, Any] | None = None,
    ) -> bool:
        """Record a result as held by `stored`; once per result (False when already finished)."""
        result.status = ResultStatus.SUCCEEDED
        result.key = stored.key
        result.content_type = stored.content_type
        result.byte_size = stored.byte_size
        result.width = stored.width
        result.height = stored.height
        result.cached = cached
        result.error = None
        if source_key is not None:
            result.source_key = source_key
        if subject is not None:
            result.subject = subject
        if checks is not None:
            result.checks = checks
        if escalation is not None:
            result.escalation = escalation
        result.timings.update(timings or {})
        return self._finish_result(job_id, result)

    def fail_result(self, job_id: str, result: ResultRecord, code: str, message: str) -> bool:
        """Record a result as failed for good; once per result (False when already finished)."""
        result.status = ResultStatus.FAILED
        result.error = {"code": code, "message": message}
        return self._finish_result(job_id, result)

    def fail(
        self,
        job_id: str,
        name: str,
        code: str,
        message: str,
        record: ResultRecord | None = None,
    ) -> bool:
        """The one way a result fails for good (an exception, a time limit, too many
        attempts, an effect's own error): recorded once, with its event; a failed cutout
        fails every unfinished result with it, since they are made from it. `record` is
        the result as its task holds it (read from the store otherwise)."""
        if record is None:
            record = self.get(job_id).results[name]
        failed = self.fail_result(job_id, record, code, message)
        if name == CUTOUT:
            self.fail_unfinished(job_id, CUTOUT_FAILED_CODE, CUTOUT_FAILED_MESSAGE)
        return failed

    def fail_unfinished(self, job_id: str, code: str, message: str) -> None:
        """Fail every result not finished yet (when the cutout they need failed)."""
        for name in sorted(self.unfinished(job_id)):
            self.fail_result(job_id, ResultRecord(name=name), code, message)

    def finish_from_cache(
        self,
        job: JobRecord,
        found: Mapping[str, StoredObject],
        model_id: str,
        source_key: str | None,
        subject: dict[str, float] | None = None,
        checks: list[dict[str, Any]] | None = None,
    ) -> None:
        """Record every result found in the cache at submit as succeeded, `cached`."""
        if CUTOUT in found:
            self.set_model_id(job.id, model_id)
        for name in job.request.result_names:
            if name in found:
                record = ResultRecord(
                    name=name, timings={"queued_at": job.created_at, "started_at": now()}
                )
                self.succeed_result(
                    job.id,
                    record,
                    found[name],
                    cached=True,
                    source_key=source_key if name == CUTOUT else None,
                    subject=subject,
                    checks=checks,
                )

    def cancel(self, job_id: str, message: str) -> bool:
        """Cancel every unfinished result of the job, which closes it as canceled; False
        when nothing was left to cancel (finished results stay as they are)."""
        canceled = self._cancel(
            keys=_keys(job_id),
            args=[now(), self.ttl_s, STREAM_MAX_LEN, CANCELED_CODE, message],
        )
        if not canceled:
            return False
        self._closed(job_id)
        return True

    def mark_kept(self, job_id: str, kept: Mapping[str, StoredObject]) -> None:
        """Record the job's kept copies (once they are stored) and keep its record past the
        TTL, so its kept results stay reachable. Only for a finished job: no script writes
        a finished job again, so nothing sets its expiry back."""
        record = json.dumps({name: asdict(copy) for name, copy in kept.items()})
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(job_key(job_id), KEPT_FIELD, record)
            pipe.persist(job_key(job_id))
            pipe.execute()

    def release_kept(self, job_id: str) -> None:
        """Forget the kept copies; the job's record expires a TTL from now."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(job_key(job_id), KEPT_FIELD)
            pipe.expire(job_key(job_id), self.ttl_s)
            pipe.execute()

    def past_deadline(self, at: float, limit: int) -> list[str]:
        """Up to `limit` jobs whose Cancel-After deadline is at or before `at`."""
        due: Any = self.redis.zrangebyscore(DEADLINES_KEY, "-inf", at, start=0, num=limit)
        return list(due)

    def claim_deadline(self, job_id: str) -> bool:
        """Take the job off the deadline list; True for the one caller that did."""
        return bool(self.redis.zrem(DEADLINES_KEY, job_id))

    def _closed(self, job_id: str) -> None:
        closed = self.get(job_id)
        self.release_active_slot(closed.owner, job_id)
        if closed.cancel_at is not None:
            self.redis.zrem(DEADLINES_KEY, job_id)
        if self._on_job_finished is not None:
            self._on_job_finished(closed)

    def _finish_result(self, job_id: str, result: ResultRecord) -> bool:
        result.timings["finished_at"] = now()
        event_type = (
            EventType.RESULT_FAILED
            if result.status == ResultStatus.FAILED
            else EventType.RESULT_SUCCEEDED
        )
        event = {"name": result.name, "result": result.to_dict()}
        outcome = self._finish(
            keys=_keys(job_id),
            args=[
                result.name,
                result.to_json(),
                event_type,
                json.dumps(event),
                self.ttl_s,
                now(),
                STREAM_MAX_LEN,
            ],
        )
        if outcome == JOB_CLOSED:
            self._closed(job_id)
        return bool(outcome)


def _keys(job_id: str) -> list[str]:
    return [job_key(job_id), pending_key(job_id), events_key(job_id)]
