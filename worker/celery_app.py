"""The workers' Celery app: `celery -A worker.celery_app worker -Q gpu,cpu`.

A worker that serves the gpu queue loads the model and runs one warm-up
inference before it consumes anything, then announces itself ready.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Celery
from celery.signals import (
    celeryd_after_setup,
    task_prerun,
    worker_process_init,
    worker_ready,
    worker_shutdown,
)

from effects.registry import load_plugins
from shared.logging import configure_logging
from shared.metrics import COLD_STARTS, MODEL_LOAD_SECONDS, TASKS
from shared.queues import QUEUE_GPU, celery_config
from shared.settings import Settings
from worker.heartbeat import Heartbeat, new_status

logger = logging.getLogger(__name__)

#: How long a forked pool process may take to start: loading and warming the model
#: takes seconds, far past Celery's 4 s default.
PROCESS_START_TIMEOUT_S = 300.0
_started_at = time.time()


def create_celery(settings: Settings | None = None) -> Celery:
    settings = settings or Settings.from_env()
    celery = Celery("cutfx", include=["worker.tasks"])
    celery.conf.update(celery_config(settings))
    celery.conf.worker_proc_alive_timeout = PROCESS_START_TIMEOUT_S
    load_plugins(settings.effect_plugins)
    return celery


app = create_celery()


class _WorkerState:
    queues: tuple[str, ...] = ()
    forks: bool = False
    heartbeat: Heartbeat | None = None


_state = _WorkerState()


def _serves_gpu() -> bool:
    return QUEUE_GPU in _state.queues


@celeryd_after_setup.connect
def _setup_worker(sender: str, instance: Any, conf: Any, **_: Any) -> None:
    configure_logging("worker")
    _state.queues = tuple(sorted(instance.app.amqp.queues.consume_from or ()))
    _state.forks = "prefork" in str(getattr(instance.pool_cls, "__module__", instance.pool_cls))
    if _serves_gpu() and not _state.forks:
        _warm_model()


@worker_process_init.connect
def _setup_child(**_: Any) -> None:
    configure_logging("worker")
    if _serves_gpu():
        _warm_model()


@worker_ready.connect
def _announce_ready(sender: Any, **_: Any) -> None:
    from worker.context import get_context

    model_facts: dict[str, Any] = {}
    if _serves_gpu() and not _state.forks:
        from worker.model import get_model

        model = get_model(get_context().settings)
        get_context().cache.publish_model(model.model_id)
        model_facts = {
            "model_id": model.model_id,
            "device": model.device,
            "precision": model.precision,
            "random_weights": model.random_weights,
        }
    status = new_status(sender.hostname, _state.queues, _started_at, **model_facts)
    _state.heartbeat = Heartbeat(get_context().redis, status)
    _state.heartbeat.start()
    logger.info(
        "worker ready", extra={"queues": list(_state.queues), "ready_after_s": status.ready_after_s}
    )


@task_prerun.connect
def _count_task(sender: Any = None, **_: Any) -> None:
    from worker.context import get_context

    get_context().metrics.increment(TASKS, {"task": str(getattr(sender, "name", sender))})


@worker_shutdown.connect
def _withdraw(**_: Any) -> None:
    if _state.heartbeat is not None:
        _state.heartbeat.stop()


def _warm_model() -> None:
    from worker.context import get_context
    from worker.model import get_model

    context = get_context()
    model = get_model(context.settings)
    seconds = model.warm_up()
    context.metrics.increment(COLD_STARTS)
    context.metrics.observe(MODEL_LOAD_SECONDS, model.load_seconds + seconds)
    logger.info("model warm", extra={"model_id": model.model_id, "warmup_s": round(seconds, 3)})
