"""Job records in Redis: a hash per job, a set of unfinished results, an event stream.

Every change of a job is written together with its event in one Lua script, so
a subscriber never sees a state without its event or an event without its state,
and the result that finishes last (whichever worker runs it) closes the job.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import redis

from shared.errors import JobNotFound
from shared.job import (
    CUTOUT,
    FAILED,
    PARTIAL,
    QUEUED,
    RESULT_FAILED,
    RESULT_RUNNING,
    RUNNING,
    SUCCEEDED,
    JobRecord,
    JobRequest,
    ResultRecord,
    Webhook,
    now,
)

KEY_PREFIX = "cutfx:job:"
RESULT_FIELD_PREFIX = "result:"
#: Events kept per job; a job makes a handful, this only bounds a runaway.
STREAM_MAX_LEN = 1000

EVENT_ACCEPTED = "job.accepted"
EVENT_STARTED = "job.started"
EVENT_RESULT_SUCCEEDED = "result.succeeded"
EVENT_RESULT_FAILED = "result.failed"
EVENT_FINISHED = "job.finished"
FINAL_EVENT = EVENT_FINISHED

# KEYS: job hash, pending set, event stream
# ARGV: result name, result json, event type, event json, ttl seconds, now, stream max length
_FINISH_RESULT = """
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'result:' .. ARGV[1], ARGV[2], 'updated_at', ARGV[6])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', 'type', ARGV[3], 'data', ARGV[4])
if redis.call('SCARD', KEYS[2]) == 0 then
  local failed, succeeded = 0, 0
  local fields = redis.call('HGETALL', KEYS[1])
  for i = 1, #fields, 2 do
    if string.sub(fields[i], 1, 7) == 'result:' then
      local status = cjson.decode(fields[i + 1])['status']
      if status == 'failed' then failed = failed + 1 else succeeded = succeeded + 1 end
    end
  end
  local final = 'succeeded'
  if succeeded == 0 then final = 'failed' elseif failed > 0 then final = 'partial' end
  redis.call('HSET', KEYS[1], 'status', final, 'finished_at', ARGV[6])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', 'type', 'job.finished',
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
redis.call('HSET', KEYS[1], 'result:' .. ARGV[1], ARGV[2], 'updated_at', ARGV[4])
if redis.call('HGET', KEYS[1], 'status') == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'running')
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'type', 'job.started',
    'data', cjson.encode({status = 'running'}))
end
return 1
"""

assert (SUCCEEDED, FAILED, PARTIAL, QUEUED, RUNNING) == (
    "succeeded",
    "failed",
    "partial",
    "queued",
    "running",
), "the Lua scripts above spell these states out"


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def new_job_id() -> str:
    return uuid.uuid4().hex


#: _FINISH_RESULT's answer when the result it recorded was the job's last.
JOB_CLOSED = 2


class JobStore:
    def __init__(
        self,
        client: redis.Redis,
        ttl_s: int,
        on_job_finished: Callable[[str], None] | None = None,
    ) -> None:
        self.redis = client
        self.ttl_s = ttl_s
        self.on_job_finished = on_job_finished
        self._finish = client.register_script(_FINISH_RESULT)
        self._start = client.register_script(_START_RESULT)

    @staticmethod
    def job_key(job_id: str) -> str:
        return f"{KEY_PREFIX}{job_id}"

    @staticmethod
    def pending_key(job_id: str) -> str:
        return f"{KEY_PREFIX}{job_id}:pending"

    @staticmethod
    def events_key(job_id: str) -> str:
        return f"{KEY_PREFIX}{job_id}:events"

    def _keys(self, job_id: str) -> list[str]:
        return [self.job_key(job_id), self.pending_key(job_id), self.events_key(job_id)]

    def create(self, job_id: str, request: JobRequest, webhook: Webhook | None = None) -> JobRecord:
        created_at = now()
        results = {
            name: ResultRecord(name=name, timings={"queued_at": created_at})
            for name in request.result_names
        }
        mapping: dict[Any, Any] = {
            "status": QUEUED,
            "created_at": created_at,
            "updated_at": created_at,
            "request": request.to_json(),
        }
        mapping.update({RESULT_FIELD_PREFIX + name: r.to_json() for name, r in results.items()})
        if webhook is not None:
            mapping["webhook"] = webhook.to_json()
        accepted = {
            "status": QUEUED,
            "effects": list(request.effect_order),
            "primary": request.primary,
        }
        job_key, pending_key, events_key = self._keys(job_id)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(job_key, mapping=mapping)
            pipe.sadd(pending_key, *request.result_names)
            self._append_event(pipe, job_id, EVENT_ACCEPTED, accepted)
            for key in (job_key, pending_key, events_key):
                pipe.expire(key, self.ttl_s)
            pipe.execute()
        return JobRecord(job_id, QUEUED, created_at, request, results, webhook=webhook)

    def get(self, job_id: str) -> JobRecord:
        fields = self.redis.hgetall(self.job_key(job_id))
        if not fields:
            raise JobNotFound(f"no job {job_id}")
        decoded = {text(k): text(v) for k, v in fields.items()}
        request = JobRequest.from_json(decoded["request"])
        results = {
            name: ResultRecord.from_json(decoded[RESULT_FIELD_PREFIX + name])
            for name in request.result_names
        }
        finished_at = decoded.get("finished_at")
        webhook = decoded.get("webhook")
        return JobRecord(
            id=job_id,
            status=decoded["status"],
            created_at=float(decoded["created_at"]),
            request=request,
            results=results,
            model_id=decoded.get("model_id"),
            finished_at=float(finished_at) if finished_at else None,
            webhook=Webhook.from_json(webhook) if webhook else None,
        )

    def exists(self, job_id: str) -> bool:
        return bool(self.redis.exists(self.job_key(job_id)))

    def set_model_id(self, job_id: str, model_id: str) -> None:
        self.redis.hset(self.job_key(job_id), "model_id", model_id)

    def start_result(self, job_id: str, result: ResultRecord) -> bool:
        """Mark a result running (and the job with it); False when it already finished."""
        result.status = RESULT_RUNNING
        result.attempts += 1
        result.timings["started_at"] = now()
        started = self._start(
            keys=self._keys(job_id),
            args=[result.name, result.to_json(), self.ttl_s, now(), STREAM_MAX_LEN],
        )
        return bool(started)

    def finish_result(self, job_id: str, result: ResultRecord) -> bool:
        """Record a finished (succeeded or failed) result and its event; once per result.

        When it was the job's last result, the job is closed and on_job_finished runs.
        """
        result.timings["finished_at"] = now()
        event_type = (
            EVENT_RESULT_FAILED if result.status == RESULT_FAILED else EVENT_RESULT_SUCCEEDED
        )
        event = {"name": result.name, "result": json.loads(result.to_json())}
        finished = self._finish(
            keys=self._keys(job_id),
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
        if finished == JOB_CLOSED and self.on_job_finished is not None:
            self.on_job_finished(job_id)
        return bool(finished)

    def fail_unfinished(self, job_id: str, code: str, message: str) -> None:
        """Fail every result not finished yet (when the cutout they need failed)."""
        for name in sorted(self.unfinished(job_id)):
            record = ResultRecord(
                name=name, status=RESULT_FAILED, error={"code": code, "message": message}
            )
            self.finish_result(job_id, record)

    def webhook(self, job_id: str) -> Webhook | None:
        raw = self.redis.hget(self.job_key(job_id), "webhook")
        return Webhook.from_json(text(raw)) if raw else None

    def last_event_id(self, job_id: str) -> str:
        newest: Any = self.redis.xrevrange(self.events_key(job_id), count=1)
        return text(newest[0][0]) if newest else "0-0"

    def unfinished(self, job_id: str) -> set[str]:
        return {text(member) for member in self.redis.smembers(self.pending_key(job_id))}

    def _append_event(self, pipe: Any, job_id: str, event_type: str, data: dict[str, Any]) -> None:
        pipe.xadd(
            self.events_key(job_id),
            {"type": event_type, "data": json.dumps(data)},
            maxlen=STREAM_MAX_LEN,
            approximate=True,
        )


__all__ = ["CUTOUT", "JobStore", "new_job_id"]
