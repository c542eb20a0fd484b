"""The worker's Celery tasks and the work they do: segment a job's photo, apply one
effect, deliver its webhook events.

Each task is a thin frame (its process, time limit, retries, the failure record, one
webhook notice) around its step, which runs apart from Celery through the plan and the
result cache: what is done, what to compute, what runs next.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis
from celery import Celery, Task, current_app, shared_task
from celery.exceptions import Reject, SoftTimeLimitExceeded, TimeLimitExceeded
from kombu.exceptions import OperationalError

from effects import EffectError, get_effect
from effects import apply_effect as effect_of
from shared.errors import CutfxError, DeliveryBusy, DeviceFailed, WebhookDeliveryFailed
from shared.jobs import plan
from shared.jobs.model import (
    CUTOUT,
    NO_SUBJECT,
    PREVIEW,
    JobRecord,
    JobRequest,
    ResultRecord,
    ResultStatus,
    StoredObject,
    cutout_checks,
    failed_check,
    now,
)
from shared.jobs.plan import Rendered, ResultCache, cache_scope, enqueue_webhook_delivery
from shared.output import decode_lossless, encode_lossless, encode_rgba
from shared.queues import (
    HARD_LIMIT_GRACE_S,
    QUEUED_AT_HEADER,
    TASK_APPLY_EFFECT,
    TASK_DELIVER_WEBHOOKS,
    TASK_SEGMENT,
)
from shared.telemetry import (
    MODEL_INFERENCES,
    QUEUE_WAIT_SECONDS,
    STAGE_SECONDS,
    continued_trace,
    job_context,
    record_trace_span,
    trace_span,
)
from worker.consumer import REQUEST_CLASS
from worker.inference_lock import inference_lock
from worker.model import LoadedModel
from worker.periodic import cancel_past_deadline
from worker.process import (
    EXIT_DEVICE_FAILED,
    Pixels,
    WorkerProcess,
    soft_time_limit,
    this_process,
)
from worker.render import PhotoLoader, render, subject_facts
from worker.webhooks import deliver_pending

logger = logging.getLogger(__name__)

#: Worth retrying the task for: another worker held the cutout's lock past our wait.
#: (Storage calls are retried within CUTFX_STORAGE_RETRY_S where they happen.)
TRANSIENT_ERRORS = (redis.exceptions.LockError,)
#: Redis (job store and broker) away. A Celery retry would have to publish a new message
#: to the broker that is away, and Celery rejects, so loses, a task whose retry cannot be
#: sent: such a task goes back on its queue instead, or, when not even that reaches
#: Redis, comes back through its visibility once Redis is back.
OUTAGE_ERRORS = (redis.ConnectionError, redis.TimeoutError, OperationalError)
MAX_RETRIES = 3
RETRY_BACKOFF_MAX_S = 30
#: Ten retries (1, 2, 4 … capped at 300 s, jittered: up to ~14 min) before an event is given up.
WEBHOOK_MAX_RETRIES = 10
WEBHOOK_BACKOFF_MAX_S = 300
DELIVERY_BUSY_RETRY_S = 2
TIMEOUT_CODE = "timeout"


def failure_code(exc: BaseException) -> str:
    """The error code a result gets when its task fails for good with `exc`."""
    if isinstance(exc, (SoftTimeLimitExceeded, TimeLimitExceeded)):
        return TIMEOUT_CODE
    if isinstance(exc, CutfxError):
        return exc.code
    return "internal_error"


class JobTask(Task):  # type: ignore[misc]
    """Records a result as failed when its task fails for good, so no job hangs, and
    queues the webhook delivery of that failure (the step's frame queues none for a
    step that raised).

    The task's own parameters say which result it makes: `job_id`, and
    `effect_name` for an effect (the cutout otherwise).
    """

    autoretry_for = TRANSIENT_ERRORS
    max_retries = MAX_RETRIES
    retry_backoff = True
    retry_backoff_max = RETRY_BACKOFF_MAX_S
    acks_late = True
    reject_on_worker_lost = True
    Request = REQUEST_CLASS

    def on_failure(
        self,
        exc: BaseException,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        einfo: Any,
    ) -> None:
        called_with = inspect.signature(self.run).bind(*args, **kwargs).arguments
        job_id = str(called_with["job_id"])
        result_name = str(called_with.get("effect_name", CUTOUT))
        code = failure_code(exc)
        with job_context(job_id):
            logger.error(
                "task failed",
                extra={"task": self.name, "result": result_name, "code": code},
                exc_info=exc,
            )
            try:
                fail_for_good(this_process(), job_id, result_name, code, type(exc).__name__)
            except Exception:
                logger.exception("could not record the failure")
            notify_webhook(job_id)


def notify_webhook(job_id: str) -> None:
    """Queue delivery of the job's new events, if it has a webhook (on its own queue)."""
    try:
        if this_process().context.jobs.webhook(job_id) is not None:
            enqueue_webhook_delivery(current_app, job_id)
    except (redis.RedisError, OperationalError):
        # The next step's notice, or the redelivered task's, queues it once Redis is back.
        logger.warning("could not queue webhook delivery")


@contextlib.contextmanager
def requeued_on_outage() -> Iterator[None]:
    """A task cut off by a Redis outage is handed back, never acknowledged as done."""
    try:
        yield
    except OUTAGE_ERRORS as exc:
        logger.warning("Redis unavailable: the task goes back", extra={"reason": repr(exc)})
        raise Reject(exc, requeue=True) from exc


@contextlib.contextmanager
def traced(task: Task, name: str, job_id: str) -> Iterator[None]:
    """The task's span in its job's trace (whose context its message's headers carry),
    after a span for the time its message waited in the queue."""
    headers = message_headers(task)
    with continued_trace(headers):
        queued_at = headers.get(QUEUED_AT_HEADER)
        if isinstance(queued_at, (int, float)):
            record_trace_span("queue_wait", float(queued_at), time.time(), task=task.name)
        with trace_span(name, **{"cutfx.job_id": job_id, "cutfx.task": task.name}):
            yield


def message_headers(task: Task) -> dict[str, Any]:
    """The headers the task's message was sent with (Celery keeps them on the request)."""
    request = task.request
    return {**vars(request), **(getattr(request, "headers", None) or {})}


@contextlib.contextmanager
def job_step(process: WorkerProcess, job_id: str, result_name: str, limit_s: int) -> Iterator[None]:
    """The frame of one step: the job's log context, its time limit (a timed-out result
    fails with `timeout` and the worker goes on), and its webhook notified once after.

    A step that raises is not notified here: it is retried, handed back (whose next
    run notifies), or failed for good by JobTask.on_failure, which notifies then; a
    notice here would come before the failure it should carry.
    """
    # Prefork pools enforce the annotated limits themselves; a solo worker needs ours.
    limited: contextlib.AbstractContextManager[None] = (
        contextlib.nullcontext() if process.forks else soft_time_limit(limit_s, HARD_LIMIT_GRACE_S)
    )
    with job_context(job_id), requeued_on_outage():
        try:
            with limited:
                yield
        except SoftTimeLimitExceeded:
            logger.error("step timed out", extra={"result": result_name, "limit_s": limit_s})
            message = f"took longer than {limit_s} s"
            fail_for_good(process, job_id, result_name, TIMEOUT_CODE, message)
        notify_webhook(job_id)


@contextlib.contextmanager
def handed_back_when_the_device_fails(process: WorkerProcess) -> Iterator[None]:
    """A failed device fails every photo after it in this process: the photo's task goes
    back on its queue for another worker, and this worker stops (its orchestrator starts
    a fresh process). A photo that fails every device it meets still ends, at
    CUTFX_TASK_MAX_ATTEMPTS."""
    try:
        yield
    except DeviceFailed as exc:
        logger.critical(
            "the device failed: the photo goes back on its queue and this worker stops",
            extra={"reason": exc.message},
        )
        process.stop_after_the_tasks_at_hand(EXIT_DEVICE_FAILED)
        raise Reject(exc, requeue=True) from exc


@shared_task(name=TASK_SEGMENT, base=JobTask, bind=True)
def segment(self: JobTask, job_id: str) -> None:
    process = this_process()
    limit_s = process.context.settings.segment_time_limit_s
    with (
        traced(self, "segment", job_id),
        job_step(process, job_id, CUTOUT, limit_s),
        handed_back_when_the_device_fails(process),
    ):
        run_segment(process, job_id, current_app)


@shared_task(name=TASK_APPLY_EFFECT, base=JobTask, bind=True)
def apply_effect(self: JobTask, job_id: str, effect_name: str) -> None:
    process = this_process()
    limit_s = process.context.settings.effect_time_limit_s
    with (
        traced(self, f"effect {effect_name}", job_id),
        job_step(process, job_id, effect_name, limit_s),
    ):
        run_effect(process, job_id, effect_name)


@shared_task(
    name=TASK_DELIVER_WEBHOOKS,
    bind=True,
    acks_late=True,
    Request=REQUEST_CLASS,
    autoretry_for=(WebhookDeliveryFailed, *TRANSIENT_ERRORS),
    retry_backoff=True,
    retry_backoff_max=WEBHOOK_BACKOFF_MAX_S,
    retry_jitter=True,
    max_retries=WEBHOOK_MAX_RETRIES,
)
def deliver_webhooks(self: Task, job_id: str) -> int:
    with traced(self, "deliver_webhooks", job_id), job_context(job_id), requeued_on_outage():
        try:
            return deliver_pending(this_process().context, job_id)
        except DeliveryBusy:
            # Another delivery holds the job's lock: no failure, look again shortly (its
            # events are sent by whichever delivery holds the lock next).
            raise self.retry(countdown=DELIVERY_BUSY_RETRY_S, max_retries=None) from None


# --- the steps: the work of each task, apart from Celery -----------------------------

CUTOUT_CONTENT_TYPE = "image/png"


class _Stopwatch:
    """Times a step's stages (its result's timings) and records each as a span."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._last = time.perf_counter()
        self._last_wall = time.time()

    def lap(self, stage: str) -> None:
        current, current_wall = time.perf_counter(), time.time()
        self.timings[f"{stage}_s"] = round(current - self._last, 4)
        record_trace_span(stage, self._last_wall, current_wall)
        self._last, self._last_wall = current, current_wall


def run_segment(worker: WorkerProcess, job_id: str, celery: Celery) -> None:
    ctx = worker.context
    job = ctx.jobs.get(job_id)
    record = job.results[CUTOUT]
    if record.status == ResultStatus.SUCCEEDED:
        # A redelivery after the cutout landed: make sure its effects were queued.
        plan.enqueue(celery, job_id, plan.after_cutout(job))
        return
    if not _may_start(worker, job, record):
        return
    model = worker.model
    ctx.jobs.set_model_id(job_id, model.model_id)
    watch = _Stopwatch()
    cache = _cache_of(worker, job)
    source, cached = _cutout_by(
        worker, cache, job, model, watch, on_miss=lambda: _answer_preview(worker, cache, job)
    )
    facts = _subject_of(worker, source, job.request)
    checks = cutout_checks(facts, job.request, ctx.check_thresholds)
    escalation = None
    if any(failed_check(checks, code) for code in ctx.settings.escalate):
        source, facts, escalation = _escalated(worker, cache, job, watch, source, facts)
        checks = cutout_checks(facts, job.request, ctx.check_thresholds)
        if escalation is not None and escalation["chosen"] == "base":
            ctx.jobs.set_model_id(job_id, escalation["model_id"])
    no_subject = failed_check(checks, NO_SUBJECT)
    if job.request.strict and no_subject is not None:
        fail_for_good(worker, job_id, CUTOUT, NO_SUBJECT, no_subject["message"], record)
        return
    subject = job.request.subject_in_upload(facts)
    view = _cutout_view(worker, cache, source, job.request, watch)
    _observe_stages(worker, record, watch, "cutout", job.request.lane)
    if job.request.preview:
        # Not answered yet (no faster model, or the cutout was cached): the cutout is.
        ctx.jobs.succeed_result(
            job_id, job.results[PREVIEW], view, cached=True, subject=subject, checks=checks
        )
    recorded = ctx.jobs.succeed_result(
        job_id,
        record,
        view,
        cached=cached,
        timings=watch.timings,
        source_key=source.key,
        subject=subject,
        checks=checks,
        escalation=escalation,
    )
    logger.info("cutout ready", extra={"cached": cached, "recorded": recorded, **watch.timings})
    if recorded:
        # Not when the job was canceled meanwhile: its effects would only be skipped.
        plan.enqueue(celery, job_id, plan.after_cutout(job))


def _escalated(
    worker: WorkerProcess,
    cache: ResultCache,
    job: JobRecord,
    watch: _Stopwatch,
    fast: StoredObject,
    fast_facts: dict[str, float],
) -> tuple[StoredObject, dict[str, float], dict[str, Any] | None]:
    """The photo run again by the escalation model (base mode), and the better of the two
    cutouts: the one whose mask is surer. Each is cached under its own model's key, so a
    repeat costs no inference. (cutout, its facts, what was done) or the fast one as it was
    when there is no escalation model."""
    model = worker.escalation_model
    if model is None:
        return fast, fast_facts, None
    started = time.perf_counter()
    base, _ = _cutout_by(worker, cache, job, model, watch)
    base_facts = _subject_of(worker, base, job.request)
    chosen = (
        "base" if base_facts.get("uncertain", 0.0) <= fast_facts.get("uncertain", 0.0) else "fast"
    )
    escalation = {
        "mode": model.mode,
        "model_id": model.model_id,
        "chosen": chosen,
        "uncertain": {"fast": fast_facts.get("uncertain"), "base": base_facts.get("uncertain")},
        "seconds": round(time.perf_counter() - started, 3),
    }
    logger.info("escalated", extra=escalation)
    if chosen == "fast":
        return fast, fast_facts, escalation
    return base, base_facts, escalation


def _cache_of(worker: WorkerProcess, job: JobRecord) -> ResultCache:
    """The cache index the job's owner may see."""
    ctx = worker.context
    return ctx.cache.scoped(cache_scope(ctx.settings.cache_scope, job.owner))


def _answer_preview(worker: WorkerProcess, cache: ResultCache, job: JobRecord) -> None:
    """The job's `preview` result from the fast model, before the slower cutout: only when
    it was asked for, is still pending, and this worker has a faster model."""
    preview = job.results.get(PREVIEW)
    if preview is None or preview.status != ResultStatus.PENDING:
        return
    model = worker.preview_model
    if model is None:
        return
    ctx, request = worker.context, job.request
    watch = _Stopwatch()
    source, cached = _cutout_by(worker, cache, job, model, watch)
    view = _cutout_view(worker, cache, source, request, watch)
    facts = _subject_of(worker, source, request)
    ctx.jobs.succeed_result(
        job.id,
        preview,
        view,
        cached=cached,
        timings=watch.timings,
        subject=request.subject_in_upload(facts),
        checks=cutout_checks(facts, request, ctx.check_thresholds),
    )
    logger.info("preview ready", extra={"model_id": model.model_id, **watch.timings})


def _cutout_by(
    worker: WorkerProcess,
    cache: ResultCache,
    job: JobRecord,
    model: LoadedModel,
    watch: _Stopwatch,
    on_miss: Callable[[], None] = lambda: None,
) -> tuple[StoredObject, bool]:
    """The lossless cutout of the job's photo by `model`, and whether it came from the
    cache; on a miss, `on_miss` runs before the model does."""
    key = plan.source_key(job.request, worker.context.settings.max_side, model.model_id)
    source = cache.lookup(key, "cutout")
    if source is not None:
        return source, True
    on_miss()
    return _segment_once(worker, cache, job, key, watch, model)


def _segment_once(
    worker: WorkerProcess,
    cache: ResultCache,
    job: JobRecord,
    key: str,
    watch: _Stopwatch,
    model: LoadedModel,
) -> tuple[StoredObject, bool]:
    """Run `model` for `key` unless another worker is already doing so: then wait and reuse."""
    ctx = worker.context

    def segmented() -> Rendered:
        request = job.request
        # The model reads the photo at CUTFX_MAX_SIDE; a full-size job's cutout is made
        # at the photo's own size from the same forward.
        rgb = decode_lossless(ctx.storage.get(request.model_input_key or request.input_key))
        photo = (
            decode_lossless(ctx.storage.get(request.input_key)) if request.model_input_key else None
        )
        watch.lap("download")
        rgba = worker.segment(rgb, model, full_size=photo)
        ctx.metrics.increment(MODEL_INFERENCES)
        watch.lap("inference")
        worker.cutouts.remember(key, rgba)
        height, width = rgba.shape[:2]
        data = encode_lossless(rgba)
        watch.lap("encode")
        facts = subject_facts(rgba[..., 3], rgb if photo is None else photo)
        return Rendered(data, CUTOUT_CONTENT_TYPE, int(width), int(height), subject=facts)

    settings = ctx.settings
    with inference_lock(
        ctx.redis, key, settings.visibility_timeout_s, settings.segment_time_limit_s
    ):
        found = cache.get_or_store(key, segmented)
    if not found.hit:
        watch.lap("upload")
    return found.stored, found.hit


def _subject_of(
    worker: WorkerProcess, source: StoredObject, request: JobRequest
) -> dict[str, float]:
    """The cutout's subject facts: remembered with it, or (for an older entry) measured."""
    if source.subject is not None:
        return source.subject
    alpha = _decoded(worker, source.key)[..., 3]
    return subject_facts(alpha, _decoded(worker, request.input_key))


def _cutout_view(
    worker: WorkerProcess,
    cache: ResultCache,
    source: StoredObject,
    request: JobRequest,
    watch: _Stopwatch,
) -> StoredObject:
    """The cutout in the format and with the options the client asked for (WebP is ~15x
    smaller than the PNG)."""
    output, options = request.output, request.options
    key = plan.view_key(request, source.key)
    if key == source.key:
        return source

    def encoded() -> Rendered:
        cutout = _decoded(worker, source.key)
        pixels = render(cutout, options, *_photo_loaders(worker, request))
        data = encode_rgba(pixels, output, dpi=request.dpi)
        return Rendered(data, output.content_type, pixels.shape[1], pixels.shape[0])

    found = cache.get_or_store(key, encoded)
    if not found.hit:
        watch.lap("view")
    return found.stored


def run_effect(worker: WorkerProcess, job_id: str, effect_name: str) -> None:
    ctx = worker.context
    job = ctx.jobs.get(job_id)
    record = job.results[effect_name]
    if not _may_start(worker, job, record):
        return
    cutout = job.results[CUTOUT]
    source_key = cutout.source_key or cutout.key
    if source_key is None:
        raise RuntimeError(f"effect {effect_name} queued before the cutout of job {job_id} exists")
    request = job.request
    params = request.params.get(effect_name, {})
    options = request.options.for_effect()
    flat = get_effect(effect_name).flat_colours
    watch = _Stopwatch()

    def rendered() -> Rendered:
        rgba = _decoded(worker, source_key)
        watch.lap("download")
        result = effect_of(effect_name, rgba, params)
        watch.lap("effect")
        pixels = render(result, options, *_photo_loaders(worker, request), flat_colours=flat)
        watch.lap("render")
        data = encode_rgba(pixels, request.output, flat, dpi=request.dpi)
        watch.lap("encode")
        return Rendered(data, request.output.content_type, pixels.shape[1], pixels.shape[0])

    key = plan.result_key(request, source_key, effect_name)
    try:
        found = _cache_of(worker, job).get_or_store(key, rendered, "effect")
    except EffectError as exc:
        fail_for_good(worker, job_id, effect_name, "effect_failed", str(exc), record)
        return
    if not found.hit:
        watch.lap("upload")
    _observe_stages(worker, record, watch, "effect", request.lane)
    ctx.jobs.succeed_result(
        job_id,
        record,
        found.stored,
        cached=found.hit,
        timings=watch.timings,
        subject=cutout.subject,
        checks=cutout.checks,
    )
    logger.info("effect ready", extra={"effect": effect_name, "cached": found.hit, **watch.timings})


def _may_start(worker: WorkerProcess, job: JobRecord, record: ResultRecord) -> bool:
    """Whether the task should do its work: not when its result was finished or canceled
    meanwhile, nor when the job is past its deadline (then it is canceled here)."""
    jobs = worker.context.jobs
    if job.cancel_at is not None and now() >= job.cancel_at:
        cancel_past_deadline(jobs, job.id)
        return False
    if record.attempts >= worker.context.settings.task_max_attempts:
        message = f"gave up after {record.attempts} attempts"
        fail_for_good(worker, job.id, record.name, "too_many_attempts", message, record)
        return False
    started = jobs.start_result(job.id, record)
    if not started:
        logger.info("result no longer pending: skipped", extra={"result": record.name})
    return started


def _observe_stages(
    worker: WorkerProcess, record: ResultRecord, watch: _Stopwatch, kind: str, lane: str
) -> None:
    """Each stage's seconds into the shared histograms, queue wait included (by lane too)."""
    timings = {**record.timings, **watch.timings}
    if "started_at" in timings and "queued_at" in timings:
        timings["queue_wait_s"] = timings["started_at"] - timings["queued_at"]
        labels = {"lane": lane, "kind": kind}
        worker.context.metrics.observe(QUEUE_WAIT_SECONDS, timings["queue_wait_s"], labels)
    for name, seconds in timings.items():
        if name.endswith("_s"):
            labels = {"stage": name[:-2], "kind": kind}
            worker.context.metrics.observe(STAGE_SECONDS, seconds, labels)


def fail_for_good(
    worker: WorkerProcess,
    job_id: str,
    name: str,
    code: str,
    message: str,
    record: ResultRecord | None = None,
) -> None:
    """Record the result `name` as failed for good, through the job store's one failure
    path (a failed cutout fails the effects with it)."""
    worker.context.jobs.fail(job_id, name, code, message, record)
    logger.warning("result failed", extra={"result": name, "code": code, "reason": message})


def _decoded(worker: WorkerProcess, key: str) -> Pixels:
    """A stored lossless image (a cutout or a photo), decoded once per process while used."""
    return worker.cutouts.get(
        key, lambda missing: decode_lossless(worker.context.storage.get(missing))
    )


def _photo_loaders(worker: WorkerProcess, request: JobRequest) -> tuple[PhotoLoader, PhotoLoader]:
    """Loaders of the job's photo and of its uploaded background, read only when a
    background needs them (and then kept in the process's LRU with the cutouts)."""
    background_key = request.options.background_image

    def photo() -> Pixels:
        return _decoded(worker, request.input_key)

    def upload() -> Pixels:
        if background_key is None:
            raise ValueError("background=image without a background image")
        return _decoded(worker, background_key)

    return photo, upload
