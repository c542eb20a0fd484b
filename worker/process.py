"""The state of one worker process, kept in one place: context, model, cutouts, role.

Built lazily, after any fork: a prefork child makes its own connections and
loads its own model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis

from shared.context import ServiceContext, build_context
from shared.queues import QUEUE_CPU, QUEUE_GPU
from shared.settings import Settings
from worker.cutout_pixels import CutoutPixels
from worker.deadlines import DeadlineSweeper
from worker.heartbeat import Heartbeat
from worker.model import LoadedModel, load_model
from worker.retention import GarbageCollector
from worker.visibility import VisibilityKeeper

#: Workers count their cache lookups apart from the API's.
CACHE_LOOKUPS_FROM = "worker"
#: Workers never block on a Redis read: a reply slower than this means the server is gone.
REDIS_SOCKET_TIMEOUT_S = 30
REDIS_CONNECT_TIMEOUT_S = 5


@dataclass
class WorkerProcess:
    """What this process holds. `queues`, `forks` and `heartbeat` are set in the main process."""

    queues: tuple[str, ...] = ()
    forks: bool = False
    heartbeat: Heartbeat | None = None
    garbage_collector: GarbageCollector | None = None
    deadline_sweeper: DeadlineSweeper | None = None
    cutouts: CutoutPixels = field(default_factory=CutoutPixels)
    _context: ServiceContext | None = None
    _model: LoadedModel | None = None
    _visibility: VisibilityKeeper | None = None

    @property
    def serves_gpu(self) -> bool:
        return QUEUE_GPU in self.queues

    @property
    def serves_cpu(self) -> bool:
        return QUEUE_CPU in self.queues

    @property
    def context(self) -> ServiceContext:
        if self._context is None:
            settings = Settings.from_env()
            client = redis.Redis.from_url(
                settings.redis_url,
                decode_responses=True,
                socket_timeout=REDIS_SOCKET_TIMEOUT_S,
                socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
                health_check_interval=30,
            )
            self._context = build_context(settings, client, CACHE_LOOKUPS_FROM)
        return self._context

    @property
    def visibility(self) -> VisibilityKeeper:
        """Refreshes the broker messages of this process's running tasks (a third of the
        visibility timeout apart)."""
        if self._visibility is None:
            # The broker is the job store's Redis: the context's client (thread-safe) serves.
            context = self.context
            interval_s = context.settings.visibility_timeout_s / 3
            self._visibility = VisibilityKeeper(context.redis, interval_s)
        return self._visibility

    @property
    def model(self) -> LoadedModel:
        """The process's one model, loaded from its settings on first use."""
        if self._model is None:
            self._model = load_model(self.context.settings)
        return self._model


_this_process = WorkerProcess()


def this_process() -> WorkerProcess:
    return _this_process
