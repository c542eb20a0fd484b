"""The work of each task, apart from Celery: segment a job's photo, apply one effect."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from celery import Celery

from effects import EffectError, apply_effect, get_effect
from shared.cache import CachedObject, record_stored
from shared.encoding import OutputFormat, decode_lossless, encode_lossless, encode_rgba
from shared.hashing import cutout_key, cutout_view_key, effect_key
from shared.job import CUTOUT, PENDING, RESULT_FAILED, RESULT_SUCCEEDED, JobRecord, ResultRecord
from shared.metrics import MODEL_INFERENCES, STAGE_SECONDS
from shared.queues import enqueue_effects
from worker.context import WorkerContext
from worker.model import LoadedModel, get_model

logger = logging.getLogger(__name__)

CUTOUT_CONTENT_TYPE = "image/png"
#: Decoded cutouts kept per process: the effects of one job usually meet in one worker.
CUTOUT_CACHE_SIZE = 4
#: One inference per cutout at a time across workers; the lock outlives any inference.
SEGMENT_LOCK_TTL_S = 600
SEGMENT_LOCK_WAIT_S = 300

Enqueue = Callable[[str, list[str], str | None], None]


class _Stopwatch:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        current = time.perf_counter()
        self.timings[f"{stage}_s"] = round(current - self._last, 4)
        self._last = current


def run_segment(ctx: WorkerContext, job_id: str, enqueue: Enqueue) -> None:
    job = ctx.jobs.get(job_id)
    record = job.results[CUTOUT]
    if record.status == RESULT_SUCCEEDED:
        # A redelivery after the cutout landed: make sure its effects were queued.
        _enqueue_waiting_effects(job, enqueue)
        return
    if not _may_start(ctx, job_id, record):
        return
    model = get_model(ctx.settings)
    ctx.jobs.set_model_id(job_id, model.model_id)
    key = cutout_key(job.request.input_sha256, ctx.settings.max_side, model.model_id)
    watch = _Stopwatch()
    source = ctx.cache.lookup(key, "cutout")
    record.cached = source is not None
    if source is None:
        source, record.cached = _segment_once(ctx, job, model, key, watch)
    _succeed(record, _cutout_view(ctx, source, job.request.output, watch), watch)
    record.source_key = source.key
    _observe_stages(ctx, record, "cutout")
    ctx.jobs.finish_result(job_id, record)
    logger.info("cutout ready", extra={"cached": record.cached, **watch.timings})
    enqueue(job_id, list(job.request.effect_order), job.request.primary)


def _segment_once(
    ctx: WorkerContext, job: JobRecord, model: LoadedModel, key: str, watch: _Stopwatch
) -> tuple[CachedObject, bool]:
    """Run the model for `key` unless another worker is already doing so: then wait and reuse."""
    lock = ctx.redis.lock(
        f"cutfx:lock:{key}", timeout=SEGMENT_LOCK_TTL_S, blocking_timeout=SEGMENT_LOCK_WAIT_S
    )
    with lock:
        done_meanwhile = ctx.cache.lookup(key)
        if done_meanwhile is not None:
            return done_meanwhile, True
        rgb = decode_lossless(ctx.storage.get(job.request.input_key))
        watch.lap("download")
        rgba = model.segment(rgb)
        ctx.metrics.increment(MODEL_INFERENCES)
        watch.lap("inference")
        data = encode_lossless(rgba)
        watch.lap("encode")
        ctx.storage.put(key, data, CUTOUT_CONTENT_TYPE)
        watch.lap("upload")
        height, width = rgba.shape[:2]
        stored = CachedObject(key, CUTOUT_CONTENT_TYPE, len(data), int(width), int(height))
        ctx.cache.remember(stored)
        _remember_pixels(key, rgba)
        return stored, False


def _cutout_view(
    ctx: WorkerContext, source: CachedObject, output: OutputFormat, watch: _Stopwatch
) -> CachedObject:
    """The cutout in the format the client asked for (WebP is ~15x smaller than the PNG)."""
    key = cutout_view_key(source.key, output)
    if key == source.key:
        return source
    known = ctx.cache.lookup(key)
    if known is not None:
        return known
    data = encode_rgba(_cutout_pixels(ctx, source.key), output)
    ctx.storage.put(key, data, output.content_type)
    watch.lap("view")
    view = CachedObject(key, output.content_type, len(data), source.width, source.height)
    ctx.cache.remember(view)
    return view


def run_effect(ctx: WorkerContext, job_id: str, effect_name: str) -> None:
    job = ctx.jobs.get(job_id)
    record = job.results[effect_name]
    if not _may_start(ctx, job_id, record):
        return
    cutout = job.results[CUTOUT]
    source_key = cutout.source_key or cutout.key
    if source_key is None:
        raise RuntimeError(f"effect {effect_name} queued before the cutout of job {job_id} exists")
    request = job.request
    params = request.params.get(effect_name, {})
    key = effect_key(source_key, effect_name, params, request.output)
    watch = _Stopwatch()
    stored = ctx.cache.lookup(key, "effect")
    record.cached = stored is not None
    if stored is None:
        rgba = _cutout_pixels(ctx, source_key)
        watch.lap("download")
        try:
            result = apply_effect(effect_name, rgba, params)
        except EffectError as exc:
            _fail(ctx, job_id, record, "effect_failed", str(exc))
            return
        watch.lap("effect")
        data = encode_rgba(result, request.output, get_effect(effect_name).flat_colours)
        watch.lap("encode")
        ctx.storage.put(key, data, request.output.content_type)
        watch.lap("upload")
        stored = CachedObject(
            key, request.output.content_type, len(data), request.width, request.height
        )
        ctx.cache.remember(stored)
    _succeed(record, stored, watch)
    _observe_stages(ctx, record, "effect")
    ctx.jobs.finish_result(job_id, record)
    logger.info(
        "effect ready", extra={"effect": effect_name, "cached": record.cached, **watch.timings}
    )


def fail_result(ctx: WorkerContext, job_id: str, name: str, code: str, message: str) -> None:
    """Record a result as failed for good; a failed cutout fails every effect with it."""
    record = ctx.jobs.get(job_id).results[name]
    _fail(ctx, job_id, record, code, message)


def _may_start(ctx: WorkerContext, job_id: str, record: ResultRecord) -> bool:
    if record.attempts >= ctx.settings.task_max_attempts:
        _fail(ctx, job_id, record, "too_many_attempts", f"gave up after {record.attempts} attempts")
        return False
    return ctx.jobs.start_result(job_id, record)


def _succeed(record: ResultRecord, stored: CachedObject, watch: _Stopwatch) -> None:
    record_stored(record, stored)
    record.timings.update(watch.timings)


def _observe_stages(ctx: WorkerContext, record: ResultRecord, kind: str) -> None:
    """Each stage's seconds into the shared histograms, queue wait included."""
    timings = dict(record.timings)
    if "started_at" in timings and "queued_at" in timings:
        timings["queue_wait_s"] = timings["started_at"] - timings["queued_at"]
    for name, seconds in timings.items():
        if name.endswith("_s"):
            ctx.metrics.observe(STAGE_SECONDS, seconds, {"stage": name[:-2], "kind": kind})


def _fail(ctx: WorkerContext, job_id: str, record: ResultRecord, code: str, message: str) -> None:
    record.status = RESULT_FAILED
    record.error = {"code": code, "message": message}
    ctx.jobs.finish_result(job_id, record)
    logger.warning("result failed", extra={"result": record.name, "code": code, "reason": message})
    if record.name == CUTOUT:
        ctx.jobs.fail_unfinished(job_id, "cutout_failed", "background removal failed")


def _enqueue_waiting_effects(job: JobRecord, enqueue: Enqueue) -> None:
    waiting = [name for name in job.request.effect_order if job.results[name].status == PENDING]
    if waiting:
        enqueue(job.id, waiting, job.request.primary)


_cutouts: OrderedDict[str, npt.NDArray[np.uint8]] = OrderedDict()


def _cutout_pixels(ctx: WorkerContext, key: str) -> npt.NDArray[np.uint8]:
    if key in _cutouts:
        _cutouts.move_to_end(key)
        return _cutouts[key]
    pixels = decode_lossless(ctx.storage.get(key))
    _remember_pixels(key, pixels)
    return pixels


def _remember_pixels(key: str, pixels: npt.NDArray[np.uint8]) -> None:
    _cutouts[key] = pixels
    if len(_cutouts) > CUTOUT_CACHE_SIZE:
        _cutouts.popitem(last=False)


def celery_enqueue(celery: Celery) -> Enqueue:
    def enqueue(job_id: str, names: list[str], primary: str | None) -> None:
        enqueue_effects(celery, job_id, names, primary)

    return enqueue
