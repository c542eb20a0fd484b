"""The work of each task, apart from Celery: segment a job's photo, apply one effect."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from celery import Celery
from redis.exceptions import LockError, LockNotOwnedError
from redis.lock import Lock

from effects import EffectError, apply_effect, get_effect
from shared.jobs import plan
from shared.jobs.model import (
    CUTOUT,
    PREVIEW,
    JobRecord,
    JobRequest,
    ResultRecord,
    ResultStatus,
    StoredObject,
    now,
)
from shared.jobs.plan import Rendered, ResultCache, cache_scope
from shared.output import decode_lossless, encode_lossless, encode_rgba
from shared.telemetry import MODEL_INFERENCES, STAGE_SECONDS
from worker.model import LoadedModel
from worker.periodic import cancel_past_deadline
from worker.process import Pixels, WorkerProcess
from worker.render import PhotoLoader, render, subject_facts

logger = logging.getLogger(__name__)

CUTOUT_CONTENT_TYPE = "image/png"


class _Stopwatch:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        current = time.perf_counter()
        self.timings[f"{stage}_s"] = round(current - self._last, 4)
        self._last = current


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
    subject = job.request.subject_in_upload(_subject_of(worker, source))
    view = _cutout_view(worker, cache, source, job.request, watch)
    _observe_stages(worker, record, watch, "cutout")
    if job.request.preview:
        # Not answered yet (no faster model, or the cutout was cached): the cutout is.
        ctx.jobs.succeed_result(job_id, job.results[PREVIEW], view, cached=True, subject=subject)
    recorded = ctx.jobs.succeed_result(
        job_id,
        record,
        view,
        cached=cached,
        timings=watch.timings,
        source_key=source.key,
        subject=subject,
    )
    logger.info("cutout ready", extra={"cached": cached, "recorded": recorded, **watch.timings})
    if recorded:
        # Not when the job was canceled meanwhile: its effects would only be skipped.
        plan.enqueue(celery, job_id, plan.after_cutout(job))


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
    subject = request.subject_in_upload(_subject_of(worker, source))
    ctx.jobs.succeed_result(
        job.id, preview, view, cached=cached, timings=watch.timings, subject=subject
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
        rgb = decode_lossless(ctx.storage.get(job.request.input_key))
        watch.lap("download")
        rgba = worker.segment(rgb, model)
        ctx.metrics.increment(MODEL_INFERENCES)
        watch.lap("inference")
        worker.cutouts.remember(key, rgba)
        height, width = rgba.shape[:2]
        data = encode_lossless(rgba)
        watch.lap("encode")
        facts = subject_facts(rgba[..., 3])
        return Rendered(data, CUTOUT_CONTENT_TYPE, int(width), int(height), subject=facts)

    # One inference per cutout at a time across workers. The lock lives as long as a
    # task's visibility, so a dead holder's lock is gone by the time its task is handed
    # out again; an inference longer than that may run twice (wasted, never wrong).
    settings = ctx.settings
    lock = ctx.redis.lock(
        f"cutfx:lock:{key}",
        timeout=settings.visibility_timeout_s,
        blocking_timeout=settings.segment_time_limit_s,
    )
    with held_while_valid(lock):
        found = cache.get_or_store(key, segmented)
    if not found.hit:
        watch.lap("upload")
    return found.stored, found.hit


@contextmanager
def held_while_valid(lock: Lock) -> Iterator[None]:
    """Hold `lock` for the block (LockError when it cannot be had in its blocking time).
    A lock that lapsed under a long block is no failure of the block: its work is done
    and stored, and at worst another worker did it too."""
    if not lock.acquire():
        raise LockError("the inference lock was not free within the blocking time")
    try:
        yield
    finally:
        try:
            lock.release()
        except LockNotOwnedError:
            logger.warning("the inference lock lapsed before the cutout was stored")


def _subject_of(worker: WorkerProcess, source: StoredObject) -> dict[str, float]:
    """The cutout's subject facts: remembered with it, or (for an older entry) measured."""
    if source.subject is not None:
        return source.subject
    return subject_facts(_decoded(worker, source.key)[..., 3])


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
        data = encode_rgba(pixels, output)
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
        result = apply_effect(effect_name, rgba, params)
        watch.lap("effect")
        pixels = render(result, options, *_photo_loaders(worker, request), flat_colours=flat)
        watch.lap("render")
        data = encode_rgba(pixels, request.output, flat)
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
    _observe_stages(worker, record, watch, "effect")
    ctx.jobs.succeed_result(
        job_id,
        record,
        found.stored,
        cached=found.hit,
        timings=watch.timings,
        subject=cutout.subject,
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
    worker: WorkerProcess, record: ResultRecord, watch: _Stopwatch, kind: str
) -> None:
    """Each stage's seconds into the shared histograms, queue wait included."""
    timings = {**record.timings, **watch.timings}
    if "started_at" in timings and "queued_at" in timings:
        timings["queue_wait_s"] = timings["started_at"] - timings["queued_at"]
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
