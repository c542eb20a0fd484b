"""Time limits where the pool does not enforce them: the gpu worker's solo and threads pools.

Celery's prefork pool (the cpu workers) applies the soft and hard limits of the
task annotations itself. In a solo worker the task runs in the main thread, so
the soft limit is a SIGALRM that raises SoftTimeLimitExceeded there; in a
threads pool (a batching gpu worker) a timer raises it in the task's thread
through CPython's asynchronous exception. Either way it lands between Python
steps: a hung loop stops, a hung C call cannot. The hard limit is a watchdog
that stops the process: its tasks are handed out again once their visibility
lapses, and count as an attempt.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from celery.exceptions import SoftTimeLimitExceeded

logger = logging.getLogger(__name__)

#: The exit status of a worker stopped by its hard time limit.
EXIT_HARD_TIME_LIMIT = 70


@contextmanager
def soft_time_limit(seconds: float, hard_grace_s: float) -> Iterator[None]:
    """SoftTimeLimitExceeded after `seconds`; the process stops `hard_grace_s` later."""
    if threading.current_thread() is not threading.main_thread():
        with _thread_time_limit(seconds, hard_grace_s):
            yield
        return

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise SoftTimeLimitExceeded(f"soft time limit of {seconds:g} s exceeded")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        with _watchdog(seconds, hard_grace_s):
            yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def _thread_time_limit(seconds: float, hard_grace_s: float) -> Iterator[None]:
    thread_id = threading.get_ident()
    finished = threading.Event()
    guard = threading.Lock()

    def interrupt() -> None:
        with guard:
            if not finished.is_set():
                _raise_in_thread(thread_id, SoftTimeLimitExceeded)

    timer = threading.Timer(seconds, interrupt)
    timer.daemon = True
    timer.start()
    try:
        with _watchdog(seconds, hard_grace_s):
            yield
    finally:
        with guard:
            finished.set()
        timer.cancel()


def _raise_in_thread(thread_id: int, exception: type[BaseException]) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exception)
    )


@contextmanager
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
