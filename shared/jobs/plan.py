"""A job's plan: which object holds each of its results, which of them already exist, and
which task runs next.

The key chain (photo → lossless cutout → cutout view → each effect) is written here
alone, as content addresses: what determines a result names the object that holds it.
So is the order of the tasks, and their sending: the API's submit and the worker's
steps both ask this module, so a repeat hits the cache that the first run filled,
whichever side looks.

The result cache: an index in Redis over those content-addressed objects in storage. A
result's object key already names everything that determines it (input digest, model
identity, effect, canonical parameters, format and quality), so the cache only remembers
what is known of each stored object. An entry whose object has gone from storage is
dropped and counts as a miss, never served. The index is kept per scope: per API key by
default (CUTFX_CACHE_SCOPE=tenant), so a hit never tells one tenant that another uploaded
the same photo; the objects themselves are content-addressed and may be shared.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import redis
from celery import Celery

from shared.jobs.model import (
    BATCH,
    CUTOUT,
    INTERACTIVE,
    PREVIEW,
    JobRecord,
    JobRequest,
    ResultStatus,
    StoredObject,
)
from shared.output import OutputFormat, OutputOptions
from shared.queues import (
    PRIORITY_BATCH,
    PRIORITY_BY_RANK,
    PRIORITY_OTHER,
    PRIORITY_PRIMARY,
    QUEUE_CPU,
    QUEUE_GPU,
    QUEUE_WEBHOOKS,
    QUEUED_AT_HEADER,
    TASK_APPLY_EFFECT,
    TASK_DELIVER_WEBHOOKS,
    TASK_SEGMENT,
)
from shared.storage import Storage
from shared.telemetry import CACHE_LOOKUPS, Metrics, trace_headers

# --- content addresses ----------------------------------------------------------------------


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pixels_sha256(pixels: npt.NDArray[np.uint8]) -> str:
    """The digest of decoded pixels and their shape: equal for every file that decodes to
    the same picture."""
    digest = hashlib.sha256(repr(pixels.shape).encode())
    digest.update(np.ascontiguousarray(pixels).data)
    return digest.hexdigest()


def photo_sha256(model_input: StoredObject, made_at: StoredObject | None = None) -> str:
    """What a job's cutout is made from: the pixels the model reads and, for a full-size
    job, those the cutout is made at; empty when an input was stored without its digest."""
    digests = [part.pixels_sha256 or "" for part in (model_input, made_at) if part is not None]
    if not all(digests):
        return ""
    return digests[0] if len(digests) == 1 else _digest("photo", *digests)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


#: The "longest side" of a photo kept at its own size (resolution=original).
ORIGINAL_SIDE = 0


def input_key(input_sha256: str, max_side: int) -> str:
    """The normalised photo at `max_side` (ORIGINAL_SIDE: at its own size)."""
    return f"inputs/{input_sha256[:2]}/{input_sha256}-s{max_side}.png"


def cutout_key(input_sha256: str, max_side: int, model_id: str) -> str:
    digest = _digest("cutout", input_sha256, str(max_side), model_id)
    return f"cutouts/{digest[:2]}/{digest}.png"


def cutout_view_key(source: str, output: OutputFormat, options: OutputOptions | None = None) -> str:
    """The cutout in the client's format and options; a PNG request without options gets
    the lossless cutout itself."""
    options = options or OutputOptions()
    if output.name == "png" and not options.canonical():
        return source
    return effect_key(source, "cutout", {}, output, options)


def effect_key(
    cutout: str,
    effect: str,
    params: dict[str, Any],
    output: OutputFormat,
    options: OutputOptions | None = None,
) -> str:
    """The key of an effect result; its cutout's key already names input and model.
    Output options are named only when some differ from the defaults, so results
    without options keep the keys they always had."""
    parts = ["effect", cutout, effect, canonical_json(params), output.name, str(output.quality)]
    chosen = (options or OutputOptions()).canonical()
    if chosen:
        parts.append(canonical_json(chosen))
    digest = _digest(*parts)
    return f"results/{digest[:2]}/{digest}.{output.extension}"


# --- the result cache ----------------------------------------------------------------------


ENTRY_PREFIX = "cutfx:cache:"
GLOBAL_SCOPE = "global"
#: The identity of the model the gpu workers run, published when one is ready.
CURRENT_MODEL_KEY = "cutfx:model:current"


class Rendered:
    """An object made to be stored: its bytes, and what the cache will remember of it
    once it has a key (a StoredObject: the one place its facts are declared)."""

    __slots__ = ("data", "facts")

    def __init__(
        self, data: bytes, content_type: str, width: int, height: int, **more: Any
    ) -> None:
        """`more`: StoredObject's optional facts (source_width, source_height, subject,
        pixels_sha256)."""
        self.data = data
        self.facts = StoredObject("", content_type, len(data), width, height, **more)

    def stored_as(self, key: str) -> StoredObject:
        return replace(self.facts, key=key)


@dataclass(frozen=True)
class Lookup:
    """What get_or_store found or made, and whether it was already there."""

    stored: StoredObject
    hit: bool


def cache_scope(setting: str, owner: str) -> str:
    """The index scope of `owner`'s results under CUTFX_CACHE_SCOPE (`tenant` or `global`)."""
    return GLOBAL_SCOPE if setting == GLOBAL_SCOPE else f"tenant:{owner}"


class ResultCache:
    def __init__(
        self,
        client: redis.Redis,
        storage: Storage,
        metrics: Metrics,
        ttl_s: int,
        where: str,
        scope: str = GLOBAL_SCOPE,
    ) -> None:
        """`client` decodes replies; `where` labels the lookups (the API at submit, a worker)."""
        self.redis = client
        self.storage = storage
        self.metrics = metrics
        self.ttl_s = ttl_s
        self.where = where
        self.scope = scope

    def scoped(self, scope: str) -> ResultCache:
        """The same cache, looking only at the index of `scope`."""
        return ResultCache(self.redis, self.storage, self.metrics, self.ttl_s, self.where, scope)

    def _entry(self, key: str) -> str:
        return f"{ENTRY_PREFIX}{self.scope}:{key}"

    def lookup(self, key: str, kind: str | None = None) -> StoredObject | None:
        """The cached object, or None; counted as a hit or miss of `kind` when one is given."""
        raw = self.redis.get(self._entry(key))
        found = None
        if raw is not None:
            if self.storage.exists(key):
                found = StoredObject(**json.loads(raw))
            else:
                self.redis.delete(self._entry(key))  # repaired: the next run stores it again
        if kind is not None:
            outcome = "hit" if found else "miss"
            labels = {"kind": kind, "outcome": outcome, "where": self.where}
            self.metrics.increment(CACHE_LOOKUPS, labels)
        return found

    def get_or_store(
        self, key: str, make: Callable[[], Rendered], kind: str | None = None
    ) -> Lookup:
        """The object under `key`: found in the cache, or made, stored and remembered now.

        The index entry is written only after storage took the bytes, so it never
        points at an object that was not written.
        """
        found = self.lookup(key, kind)
        if found is not None:
            return Lookup(found, hit=True)
        rendered = make()
        stored = rendered.stored_as(key)
        self.storage.put(key, rendered.data, stored.content_type)
        self.redis.set(self._entry(key), json.dumps(asdict(stored)), ex=self.ttl_s)
        return Lookup(stored, hit=False)

    def current_model(self) -> str | None:
        model_id: Any = self.redis.get(CURRENT_MODEL_KEY)
        return str(model_id) if model_id is not None else None

    def publish_model(self, model_id: str) -> None:
        self.redis.set(CURRENT_MODEL_KEY, model_id)


# --- the key chain of a request ---------------------------------------------------------------


def source_key(request: JobRequest, max_side: int, model_id: str) -> str:
    """The lossless cutout of the request's photo by the model `model_id`, at the
    request's resolution: what every other result of the job is made from."""
    side = ORIGINAL_SIDE if request.at_original_size else max_side
    return cutout_key(request.cutout_identity, side, model_id)


def view_key(request: JobRequest, source: str) -> str:
    """The cutout in the client's format and output options, made from `source`."""
    return cutout_view_key(source, request.output, request.options)


def result_key(request: JobRequest, source: str, effect_name: str) -> str:
    """The effect's result in the client's format and options, made from `source`."""
    params = request.params.get(effect_name, {})
    return effect_key(source, effect_name, params, request.output, request.options.for_effect())


@dataclass(frozen=True)
class Done:
    """What already exists for a request: the model it was made with, the lossless
    cutout the effects start from, and each result found (the cutout as its view)."""

    model_id: str = ""
    source_key: str | None = None
    results: dict[str, StoredObject] = field(default_factory=dict)
    #: The cutout's subject facts, in the processed photo's pixels.
    subject: dict[str, float] | None = None


def find_done(cache: ResultCache, request: JobRequest, max_side: int) -> Done:
    """The request's results already in `cache`, by the model the gpu workers run now.
    Effects count only once the cutout's view is there too: without it the job needs
    the model anyway."""
    model_id = cache.current_model()
    if model_id is None:
        return Done()
    source = source_key(request, max_side, model_id)
    cutout = cache.lookup(source, "cutout")
    if cutout is None or cutout.subject is None:
        return Done()
    view = cache.lookup(view_key(request, source))
    if view is None:
        return Done()
    found = {CUTOUT: view}
    if request.preview:
        # The cutout itself is there: nothing quicker to show first.
        found[PREVIEW] = view
    for name in request.effect_order:
        hit = cache.lookup(result_key(request, source, name), "effect")
        if hit is not None:
            found[name] = hit
    return Done(model_id, source, found, cutout.subject)


@dataclass(frozen=True)
class NextSteps:
    """The tasks to queue for a job: its segment, or these effects (primary first)."""

    segment: bool = False
    effects: tuple[str, ...] = ()
    primary: str | None = None
    lane: str = INTERACTIVE
    #: The job's rank among its key's unfinished jobs (1: its only one), for fair share.
    rank: int = 1


def after_submit(request: JobRequest, done: Mapping[str, StoredObject], rank: int = 1) -> NextSteps:
    """What a new job needs: the model unless its cutout exists, else its missing effects;
    `rank`: the job's among its key's unfinished ones."""
    if CUTOUT not in done:
        return NextSteps(segment=True, primary=request.primary, lane=request.lane, rank=rank)
    missing = tuple(name for name in request.effect_order if name not in done)
    return NextSteps(effects=missing, primary=request.primary, lane=request.lane)


def after_cutout(job: JobRecord) -> NextSteps:
    """Once the job's cutout exists: every effect still pending."""
    waiting = tuple(
        name
        for name in job.request.effect_order
        if job.results[name].status == ResultStatus.PENDING
    )
    return NextSteps(effects=waiting, primary=job.request.primary, lane=job.request.lane)


def enqueue(celery: Celery, job_id: str, steps: NextSteps) -> None:
    """Send the job's next tasks to their queues, in its lane."""
    if steps.segment:
        enqueue_segment(celery, job_id, steps.lane, steps.rank)
    if steps.effects:
        enqueue_effects(celery, job_id, steps.effects, steps.primary, steps.lane)


def segment_priority(lane: str, rank: int) -> int:
    """The priority of a job's cutout: its lane, then its rank among its key's jobs."""
    if lane == BATCH:
        return PRIORITY_BATCH
    return PRIORITY_BY_RANK[min(max(rank, 1), len(PRIORITY_BY_RANK)) - 1]


def enqueue_segment(celery: Celery, job_id: str, lane: str = INTERACTIVE, rank: int = 1) -> None:
    _send(celery, TASK_SEGMENT, [job_id], QUEUE_GPU, segment_priority(lane, rank))


def enqueue_effects(
    celery: Celery,
    job_id: str,
    effect_names: Sequence[str],
    primary: str | None,
    lane: str = INTERACTIVE,
) -> None:
    """Queue effects in order; the primary one jumps ahead of other jobs' effects, and a
    batch job's come after every interactive one's."""
    for name in effect_names:
        if lane == BATCH:
            priority = PRIORITY_BATCH
        else:
            priority = PRIORITY_PRIMARY if name == primary else PRIORITY_OTHER
        _send(celery, TASK_APPLY_EFFECT, [job_id, name], QUEUE_CPU, priority)


def enqueue_webhook_delivery(celery: Celery, job_id: str) -> None:
    """Deliver whatever events of the job its webhook has not received yet."""
    _send(celery, TASK_DELIVER_WEBHOOKS, [job_id], QUEUE_WEBHOOKS, PRIORITY_PRIMARY)


def _send(celery: Celery, task: str, args: list[str], queue: str, priority: int) -> None:
    """Publish one task, stamped with when it was queued (the oldest waiting task's age
    on /metrics) and the trace it belongs to."""
    headers = {QUEUED_AT_HEADER: time.time(), **trace_headers()}
    celery.send_task(task, args=args, queue=queue, priority=priority, headers=headers)
