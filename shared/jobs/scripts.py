"""The job store's Lua scripts, their vocabulary filled in from the enums of the job model.

Every state and event name in the scripts is a `$placeholder` that is
substituted here from JobStatus, ResultStatus and EventType, so the scripts
cannot drift from the Python side: a placeholder without a value, or one left
over, stops the import with ScriptVocabularyError.
"""

from __future__ import annotations

import re
from string import Template

from shared.errors import ScriptVocabularyError
from shared.jobs.model import EventType, JobStatus, ResultStatus

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


def render(source: str, vocabulary: dict[str, str] = VOCABULARY) -> str:
    """The script with its vocabulary filled in; raises ScriptVocabularyError on any gap."""
    try:
        rendered = Template(source).substitute(vocabulary)
    except (KeyError, ValueError) as exc:
        raise ScriptVocabularyError(f"a job script names an unknown word: {exc}") from None
    leftover = re.search(r"\$\w+", rendered)
    if leftover:
        raise ScriptVocabularyError(f"a job script keeps a placeholder: {leftover.group()}")
    return rendered


FINISH_RESULT = render(_COUNT_RESULTS + _FINISH_RESULT)
START_RESULT = render(_START_RESULT)
CANCEL_JOB = render(_COUNT_RESULTS + _CANCEL_JOB)
