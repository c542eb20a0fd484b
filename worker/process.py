"""The state of one worker process, kept in one place: context, model, cutouts, role;
and the time limits it enforces where its pool does not.

Built lazily, after any fork: a prefork child makes its own connections and
loads its own model.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType

import numpy as np
import numpy.typing as npt
from celery.exceptions import SoftTimeLimitExceeded

from shared.context import ServiceContext, connect_context
from shared.errors import ConfigurationError
from shared.queues import QUEUE_CPU, QUEUE_GPU
from shared.settings import Settings
from shared.telemetry import BATCH_SIZE
from worker.batching import Batcher, effective_batch_max
from worker.consumer import VisibilityKeeper
from worker.model import ESCALATION_MODE, PREVIEW_MODE, LoadedModel, load_model
from worker.periodic import DeadlineSweeper, GarbageCollector, Heartbeat, LaneAging

logger = logging.getLogger(__name__)

#: Workers count their cache lookups apart from the API's.
CACHE_LOOKUPS_FROM = "worker"
#: Workers never block on a Redis read: a reply slower than this means the server is gone.
REDIS_SOCKET_TIMEOUT_S = 30
REDIS_CONNECT_TIMEOUT_S = 5


# Decoded cutouts (and photos behind blurred backgrounds) kept in memory: the effects of one
# job usually meet in one worker process.

Pixels = npt.NDArray[np.uint8]
#: Decoded cutouts kept per process; a 2048² RGBA cutout is 16 MB.
CUTOUT_CACHE_SIZE = 4


class CutoutPixels:
    """A small least-recently-used map from a cutout's storage key to its decoded pixels."""

    def __init__(self, size: int = CUTOUT_CACHE_SIZE) -> None:
        self.size = size
        self._pixels: OrderedDict[str, Pixels] = OrderedDict()
        # A batching gpu worker's task threads share it.
        self._lock = threading.Lock()

    def get(self, key: str, load: Callable[[str], Pixels]) -> Pixels:
        """The pixels of `key`, loaded (and remembered) on a miss."""
        with self._lock:
            if key in self._pixels:
                self._pixels.move_to_end(key)
                return self._pixels[key]
        pixels = load(key)
        self.remember(key, pixels)
        return pixels

    def remember(self, key: str, pixels: Pixels) -> None:
        with self._lock:
            self._pixels[key] = pixels
            self._pixels.move_to_end(key)
            while len(self._pixels) > self.size:
                self._pixels.popitem(last=False)


@dataclass
class WorkerProcess:
    """What this process holds. `node_name`, `queues`, `forks` and `heartbeat` are set in
    the main process."""

    #: Set at the process's entry point (worker/celery_app.py) before anything runs.
    settings: Settings | None = None
    #: The Celery node's name, `<name>@<host>`.
    node_name: str = ""
    queues: tuple[str, ...] = ()
    forks: bool = False
    #: A threads pool: its segment tasks run side by side, so their forwards batch.
    threaded: bool = False
    heartbeat: Heartbeat | None = None
    #: A prefork pool process's own heartbeat, for the gpu queue once its model is warm.
    #: Apart from `heartbeat`, which a process forked later inherits from the main process.
    pool_heartbeat: Heartbeat | None = None
    garbage_collector: GarbageCollector | None = None
    deadline_sweeper: DeadlineSweeper | None = None
    lane_aging: LaneAging | None = None
    cutouts: CutoutPixels = field(default_factory=CutoutPixels)
    _context: ServiceContext | None = None
    _model: LoadedModel | None = None
    _visibility: VisibilityKeeper | None = None
    #: Models of other modes (preview, escalation) by mode; None where none can be had.
    _other_models: dict[str, LoadedModel | None] = field(default_factory=dict)
    _other_models_lock: threading.Lock = field(default_factory=threading.Lock)
    _batchers: dict[str, Batcher] = field(default_factory=dict)
    _batcher_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def serves_gpu(self) -> bool:
        return QUEUE_GPU in self.queues

    @property
    def serves_cpu(self) -> bool:
        return QUEUE_CPU in self.queues

    @property
    def context(self) -> ServiceContext:
        if self._context is None:
            if self.settings is None:
                raise ConfigurationError("a worker process is started through worker.celery_app")
            self._context = connect_context(
                self.settings,
                CACHE_LOOKUPS_FROM,
                decode_responses=True,
                socket_timeout=REDIS_SOCKET_TIMEOUT_S,
                socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
                health_check_interval=30,
            )
        return self._context

    @property
    def visibility(self) -> VisibilityKeeper:
        """Refreshes the broker messages of this process's running tasks (a third of the
        visibility timeout apart)."""
        if self._visibility is None:
            context = self.context
            interval_s = context.settings.visibility_timeout_s / 3
            self._visibility = VisibilityKeeper(context.broker, interval_s)
        return self._visibility

    def stop_worker(self, how: signal.Signals) -> None:
        """Celery's shutdown of this worker, sent to its main process (this one's parent
        in a prefork pool): SIGTERM warm, the tasks at hand finish and no other starts;
        SIGQUIT cold, what the worker had taken goes back on its queue."""
        os.kill(os.getppid() if self.forks else os.getpid(), how)

    def stop_after_the_tasks_at_hand(self, exit_status: int) -> None:
        """Celery's warm shutdown, the worker exiting with `exit_status`: what its SIGTERM
        handler does, but for the status, which is always 0 there. Set in this process
        where it is the worker's main one (solo and threads pools: the gpu worker as
        deployed); a prefork pool process can only signal its main process, whose
        shutdown then exits 0."""
        if self.forks:
            self.stop_worker(signal.SIGTERM)
            return
        from celery.worker import state

        state.should_stop = exit_status

    @property
    def model(self) -> LoadedModel:
        """The process's one model, loaded from its settings on first use."""
        if self._model is None:
            self._model = load_model(self.context.settings)
        return self._model

    @property
    def preview_model(self) -> LoadedModel | None:
        """The fast model a slower-mode worker answers previews with: None in fast mode
        (its cutout is the quick one already) or when no fast checkpoint can be had."""
        settings = self.context.settings
        if settings.model_mode == PREVIEW_MODE:
            return None
        return self._other_model(
            PREVIEW_MODE,
            settings.preview_ckpt,
            "no preview model: a preview will be the cutout itself",
        )

    @property
    def escalation_model(self) -> LoadedModel | None:
        """The base model a fast-mode worker runs a photo again with when its cutout fails
        a check of CUTFX_ESCALATE: None when escalation is off, the worker is not in fast
        mode, or no base checkpoint can be had. Loaded on the first escalation."""
        settings = self.context.settings
        if not settings.escalate or settings.model_mode != PREVIEW_MODE:
            return None
        return self._other_model(
            ESCALATION_MODE,
            settings.escalation_ckpt,
            "no escalation model: unsure cutouts stay as they are",
        )

    def _other_model(self, mode: str, checkpoint: str, without: str) -> LoadedModel | None:
        """A model of another mode than the process's own, loaded once, on first use; None
        (and `without` logged, once) when its checkpoint cannot be had."""
        with self._other_models_lock:
            if mode not in self._other_models:
                self._other_models[mode] = self._load_other_model(mode, checkpoint, without)
            return self._other_models[mode]

    def _load_other_model(self, mode: str, checkpoint: str, without: str) -> LoadedModel | None:
        settings = self.context.settings.with_overrides(model_mode=mode, model_ckpt=checkpoint)
        try:
            return load_model(settings)
        except OSError as exc:
            logger.warning(without, extra={"reason": str(exc)})
            return None

    def segment(
        self,
        rgb: npt.NDArray[np.uint8],
        model: LoadedModel | None = None,
        full_size: npt.NDArray[np.uint8] | None = None,
    ) -> npt.NDArray[np.uint8]:
        """The photo's RGBA cutout by `model` (the process's own by default), at
        `full_size`'s size when given. In a threads pool the forward joins the other
        threads' in a batch; preparing and finishing run in the calling thread."""
        model = model or self.model
        if not self.threaded:
            return model.segment(rgb, full_size)
        logits = self.batcher(model).run(model.prepare(rgb))
        return model.finish(rgb, logits, full_size)

    def batcher(self, model: LoadedModel) -> Batcher:
        """The batcher of `model`'s forwards, started on first use."""
        with self._batcher_lock:
            if model.model_id not in self._batchers:
                self._batchers[model.model_id] = self._new_batcher(model)
            return self._batchers[model.model_id]

    def _new_batcher(self, model: LoadedModel) -> Batcher:
        settings = self.context.settings
        max_size = effective_batch_max(settings.batch_max, model.device)
        metrics = self.context.metrics
        logger.info(
            "batching",
            extra={
                "model_id": model.model_id,
                "batch_max": max_size,
                "batch_wait_ms": settings.batch_wait_ms,
            },
        )
        return Batcher(
            model.saliency,
            max_size,
            settings.batch_wait_ms / 1000,
            on_batch=lambda size: metrics.observe(BATCH_SIZE, size),
        )

    def stop_batching(self) -> None:
        with self._batcher_lock:
            for batcher in self._batchers.values():
                batcher.stop()
            self._batchers.clear()


_this_process = WorkerProcess()


def this_process() -> WorkerProcess:
    return _this_process


# Time limits where the pool does not enforce them: the gpu worker's solo and threads pools.
#
# Celery's prefork pool (the cpu workers) applies the soft and hard limits of the
# task annotations itself. In a solo worker the task runs in the main thread, so
# the soft limit is a SIGALRM that raises SoftTimeLimitExceeded there; in a
# threads pool (a batching gpu worker) a timer raises it in the task's thread
# through CPython's asynchronous exception. Either way it lands between Python
# steps: a hung loop stops, a hung C call cannot. The hard limit is a watchdog
# that stops the process: its tasks are handed out again once their visibility
# lapses, and count as an attempt.

#: The exit status of a worker stopped by its hard time limit.
EXIT_HARD_TIME_LIMIT = 70
#: The exit status of a gpu worker whose model did not load. Were it to go on, it would
#: take every photo from the queue and fail it in milliseconds, where a worker that can
#: run them would have made them; stopped, its photos wait and its orchestrator sees it.
EXIT_MODEL_UNAVAILABLE = 3
#: The exit status of a gpu worker whose device failed under a forward: not 0, so that its
#: orchestrator records a failure (Kubernetes: reason Error, and the restart's back-off)
#: rather than a worker that was asked to stop.
EXIT_DEVICE_FAILED = 4


@contextlib.contextmanager
def soft_time_limit(seconds: float, hard_grace_s: float) -> Iterator[None]:
    """SoftTimeLimitExceeded after `seconds`; the process stops `hard_grace_s` later."""
    if threading.current_thread() is not threading.main_thread():
        with _thread_time_limit(seconds, hard_grace_s):
            yield
        return

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise SoftTimeLimitExceeded(f"soft time limit of {seconds:g} s exceeded")

    # The watchdog is armed before the alarm: an alarm that went off while the watchdog
    # was still starting (a loaded machine) would leave it armed, and stop the process
    # long after the step was over.
    with _watchdog(seconds, hard_grace_s):
        previous = signal.signal(signal.SIGALRM, on_alarm)
        try:
            signal.setitimer(signal.ITIMER_REAL, seconds)
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def _thread_time_limit(seconds: float, hard_grace_s: float) -> Iterator[None]:
    thread_id = threading.get_ident()
    finished = threading.Event()
    guard = threading.Lock()

    def interrupt() -> None:
        with guard:
            if not finished.is_set():
                _raise_in_thread(thread_id, SoftTimeLimitExceeded)

    with _watchdog(seconds, hard_grace_s):  # armed first, as in the main thread's
        timer = threading.Timer(seconds, interrupt)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            with guard:
                finished.set()
            timer.cancel()


def _raise_in_thread(thread_id: int, exception: type[BaseException]) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exception)
    )


@contextlib.contextmanager
def _watchdog(seconds: float, hard_grace_s: float) -> Iterator[None]:
    watchdog = threading.Timer(seconds + hard_grace_s, _stop_process, args=(seconds,))
    watchdog.daemon = True
    watchdog.start()
    try:
        yield
    finally:
        watchdog.cancel()


def _stop_process(seconds: float) -> None:
    logger.critical(
        "hard time limit exceeded: stopping the process; its task will be handed out again",
        extra={"soft_limit_s": seconds},
    )
    os._exit(EXIT_HARD_TIME_LIMIT)
