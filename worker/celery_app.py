"""The workers' Celery app: `celery -A worker.celery_app worker -Q gpu,cpu`.

A worker that serves the gpu queue loads the model and runs one warm-up
inference before it consumes anything, then announces itself ready. In a prefork
pool the pool processes load it, and each announces the gpu queue itself once its
model is warm: the main process announces only its other queues.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

from celery import Celery
from celery.concurrency.prefork import TaskPool as PreforkPool
from celery.concurrency.thread import TaskPool as ThreadsPool
from celery.signals import (
    celeryd_after_setup,
    task_postrun,
    task_prerun,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from effects.registry import load_plugins
from shared.queues import QUEUE_GPU, celery_config
from shared.settings import Settings
from shared.telemetry import (
    COLD_STARTS,
    MODEL_LOAD_SECONDS,
    TASKS,
    configure_logging,
    configure_tracing,
    stop_tracing,
)
from worker.consumer import CONSUMER_CLASS, delivery_tag_of
from worker.memory import keep_freed_memory
from worker.periodic import DeadlineSweeper, GarbageCollector, Heartbeat, LaneAging, new_status
from worker.process import EXIT_MODEL_UNAVAILABLE, this_process

logger = logging.getLogger(__name__)

#: How long a forked pool process may take to start: loading and warming the model
#: takes seconds, far past Celery's 4 s default.
PROCESS_START_TIMEOUT_S = 300.0
_started_at = time.time()


def create_celery(settings: Settings) -> Celery:
    settings.require_safe_start("workers")
    celery = Celery("cutfx", include=["worker.tasks"])
    celery.conf.update(celery_config(settings))
    celery.conf.worker_proc_alive_timeout = PROCESS_START_TIMEOUT_S
    celery.conf.worker_consumer = CONSUMER_CLASS
    load_plugins(settings.effect_plugins)
    return celery


#: The worker's entry point (`celery -A worker.celery_app`) reads the environment here,
#: once; the process state and everything below it are handed these settings.
settings = Settings.from_env()
app = create_celery(settings)
this_process().settings = settings


@celeryd_after_setup.connect
def _setup_worker(sender: str, instance: Any, conf: Any, **_: Any) -> None:
    configure_logging("worker")
    configure_tracing("worker", settings)
    keep_freed_memory()  # before the pool forks, so its processes inherit it
    process = this_process()
    process.node_name = sender
    process.queues = tuple(sorted(instance.app.amqp.queues.consume_from or ()))
    process.forks = _is_pool(instance.pool_cls, PreforkPool)
    process.threaded = _is_pool(instance.pool_cls, ThreadsPool)
    if process.serves_gpu and not process.forks:
        _warm_model_or_exit()
        if process.threaded:
            process.batcher(process.model)  # started with the model, not by the first task


def _is_pool(pool_cls: Any, kind: type) -> bool:
    return isinstance(pool_cls, type) and issubclass(pool_cls, kind)


@worker_process_init.connect
def _setup_child(**_: Any) -> None:
    configure_logging("worker")
    # A forked child needs its own exporter thread: the parent's did not survive the fork.
    configure_tracing("worker", settings)
    if this_process().serves_gpu:
        _warm_model_or_exit()
        _announce_pool_process_ready()


def _announce_pool_process_ready() -> None:
    """A prefork pool process with its model warm announces the gpu queue, under a node
    name of its own on the worker's host (what `cutfx worker-ready` matches)."""
    process = this_process()
    name, _, host = process.node_name.rpartition("@")
    status = new_status(
        f"{name}.{os.getpid()}@{host}", (QUEUE_GPU,), _started_at, **_warm_model_facts()
    )
    process.pool_heartbeat = Heartbeat(process.context.redis, status)
    process.pool_heartbeat.start()
    logger.info(
        "pool process ready",
        extra={"queues": [QUEUE_GPU], "ready_after_s": status.ready_after_s},
    )


@worker_process_shutdown.connect
def _withdraw_pool_process(**_: Any) -> None:
    process = this_process()
    if process.pool_heartbeat is not None:
        process.pool_heartbeat.stop()


def _warm_model_facts() -> dict[str, Any]:
    """The warm model's facts for a heartbeat, its id published for the cache."""
    process = this_process()
    model = process.model
    process.context.cache.publish_model(model.model_id)
    return {
        "model_id": model.model_id,
        "device": model.device,
        "precision": model.precision,
        "engine": model.engine.name,
        "random_weights": model.random_weights,
    }


@worker_ready.connect
def _announce_ready(sender: Any, **_: Any) -> None:
    process = this_process()
    queues = process.queues
    model_facts: dict[str, Any] = {}
    if process.serves_gpu and process.forks:
        # Its pool processes hold the model: each announces the gpu queue when it is warm.
        queues = tuple(queue for queue in queues if queue != QUEUE_GPU)
    elif process.serves_gpu:
        model_facts = _warm_model_facts()
    status = new_status(sender.hostname, queues, _started_at, **model_facts)
    process.heartbeat = Heartbeat(process.context.redis, status)
    process.heartbeat.start()
    process.deadline_sweeper = DeadlineSweeper(process.context.jobs, _notify_webhook)
    process.deadline_sweeper.start()
    context = process.context
    process.lane_aging = LaneAging(context.broker, context.redis, context.settings.batch_max_wait_s)
    process.lane_aging.start()
    if process.serves_cpu:
        interval = process.context.settings.gc_interval_s
        process.garbage_collector = GarbageCollector(process.context, interval)
        process.garbage_collector.start()
    logger.info(
        "worker ready",
        extra={"queues": list(queues), "ready_after_s": status.ready_after_s},
    )


@task_prerun.connect
def _count_task(sender: Any = None, **_: Any) -> None:
    labels = {"task": str(getattr(sender, "name", sender))}
    this_process().context.metrics.increment(TASKS, labels)


@task_prerun.connect
def _hold_visibility(sender: Any = None, **_: Any) -> None:
    tag = delivery_tag_of(sender)
    if tag is not None:
        this_process().visibility.hold(tag)


@task_postrun.connect
def _release_visibility(sender: Any = None, **_: Any) -> None:
    tag = delivery_tag_of(sender)
    if tag is not None:
        this_process().visibility.release(tag)


@worker_shutdown.connect
def _withdraw(**_: Any) -> None:
    stop_tracing()
    process = this_process()
    if process.heartbeat is not None:
        process.heartbeat.stop()
    if process.garbage_collector is not None:
        process.garbage_collector.stop()
    if process.deadline_sweeper is not None:
        process.deadline_sweeper.stop()
    if process.lane_aging is not None:
        process.lane_aging.stop()
    process.stop_batching()


def _notify_webhook(job_id: str) -> None:
    # Imported here: the tasks module imports this one's process state.
    from worker.tasks import notify_webhook

    notify_webhook(job_id)


def _warm_model_or_exit() -> None:
    """The model loaded and warm before the worker consumes anything, or the worker
    stops. Celery logs and goes past what a signal handler raises, except SystemExit.

    In a prefork pool process, exiting is not enough: the pool would replace it with
    another failing the same way while the main process went on taking photos, so the
    main process is sent Celery's cold shutdown, which hands back what it had taken."""
    process = this_process()
    try:
        _warm_model()
    except Exception as exc:
        logger.critical(
            "the model did not load: this worker stops before taking any job",
            extra={"reason": f"{type(exc).__name__}: {exc}"},
            exc_info=True,
        )
        if process.forks:
            process.stop_worker(signal.SIGQUIT)
        raise SystemExit(EXIT_MODEL_UNAVAILABLE) from exc


def _warm_model() -> None:
    process = this_process()
    model = process.model
    seconds = model.warm_up()
    metrics = process.context.metrics
    metrics.increment(COLD_STARTS)
    metrics.observe(MODEL_LOAD_SECONDS, model.load_seconds + seconds)
    logger.info("model warm", extra={"model_id": model.model_id, "warmup_s": round(seconds, 3)})
    preview = process.preview_model
    if preview is not None:
        seconds = preview.warm_up()
        logger.info(
            "preview model warm",
            extra={"model_id": preview.model_id, "warmup_s": round(seconds, 3)},
        )
