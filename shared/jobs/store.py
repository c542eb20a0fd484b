"""Job records in Redis, and the only code that changes them.

A job is a hash, a set of unfinished results and an event stream. Every
change of a result is written together with its event in one Lua script, so a
subscriber never sees a state without its event or an event without its state,
and the result that finishes last (whichever process records it) closes the
job and runs the store's `on_job_finished` with the closed job.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import redis

from shared.errors import JobNotFound
from shared.jobs.keys import DEADLINES_KEY, active_jobs_key, events_key, job_key, pending_key
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
from shared.jobs.scripts import (
    CANCEL_JOB,
    FINISH_RESULT,
    JOB_CLOSED,
    RESULT_FIELD_PREFIX,
    START_RESULT,
)

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

# KEYS: the owner's active set. ARGV: job id, now, oldest score still counted, cap.
# Entries older than a job's lifetime are dropped first, so a lost close frees its slot.
_CLAIM_ACTIVE_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 1
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
        self._claim_slot = client.register_script(_CLAIM_ACTIVE_SLOT)
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

    def claim_active_slot(self, owner: str, job_id: str, cap: int) -> bool:
        """Count a new unfinished job against its owner's cap; False when the cap is reached."""
        current = now()
        claimed = self._claim_slot(
            keys=[active_jobs_key(owner)], args=[job_id, current, current - self.ttl_s, cap]
        )
        return bool(claimed)

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
