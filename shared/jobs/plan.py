"""A job's plan: which object holds each of its results, which of them already exist, and
which task runs next.

The key chain (photo → lossless cutout → cutout view → each effect) is written here
alone, and so is the order of the tasks: the API's submit and the worker's steps both
ask this module, so a repeat hits the cache that the first run filled, whichever side
looks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from celery import Celery

from shared.cache import ResultCache
from shared.hashing import cutout_key, cutout_view_key, effect_key
from shared.jobs.model import CUTOUT, PREVIEW, JobRecord, JobRequest, ResultStatus, StoredObject
from shared.queues import enqueue_effects, enqueue_segment


def source_key(request: JobRequest, max_side: int, model_id: str) -> str:
    """The lossless cutout of the request's photo by the model `model_id`: what every
    other result of the job is made from."""
    return cutout_key(request.input_sha256, max_side, model_id)


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


def after_submit(request: JobRequest, done: Mapping[str, StoredObject]) -> NextSteps:
    """What a new job needs: the model unless its cutout exists, else its missing effects."""
    if CUTOUT not in done:
        return NextSteps(segment=True, primary=request.primary)
    missing = tuple(name for name in request.effect_order if name not in done)
    return NextSteps(effects=missing, primary=request.primary)


def after_cutout(job: JobRecord) -> NextSteps:
    """Once the job's cutout exists: every effect still pending."""
    waiting = tuple(
        name
        for name in job.request.effect_order
        if job.results[name].status == ResultStatus.PENDING
    )
    return NextSteps(effects=waiting, primary=job.request.primary)


def enqueue(celery: Celery, job_id: str, steps: NextSteps) -> None:
    """Send the job's next tasks to their queues."""
    if steps.segment:
        enqueue_segment(celery, job_id)
    if steps.effects:
        enqueue_effects(celery, job_id, steps.effects, steps.primary)
