"""The solo gpu worker's own time limits (Celery's solo pool enforces none)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from tests.conftest import REPO
from worker.process import EXIT_HARD_TIME_LIMIT, soft_time_limit


def spin_within(limit_s: float) -> None:
    with soft_time_limit(limit_s, hard_grace_s=60):
        while True:
            time.sleep(0.01)


def test_a_step_past_its_soft_limit_is_interrupted_and_the_process_goes_on():
    started = time.monotonic()
    with pytest.raises(SoftTimeLimitExceeded):
        spin_within(0.3)
    assert time.monotonic() - started < 2
    with soft_time_limit(5, hard_grace_s=60):
        time.sleep(0.1)  # the next step runs, and its alarm is its own


def test_a_step_that_ignores_its_soft_limit_stops_the_process_at_the_hard_one():
    """A hung C call cannot be interrupted: the watchdog ends the process (its task comes
    back through its visibility and counts as an attempt)."""
    probe = (
        "import time\n"
        "from worker.process import soft_time_limit\n"
        "with soft_time_limit(0.2, hard_grace_s=0.5):\n"
        "    while True:\n"
        "        try:\n"
        "            time.sleep(10)\n"
        "        except BaseException:\n"
        "            pass\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, timeout=30, check=False)
    assert done.returncode == EXIT_HARD_TIME_LIMIT


class SlowStartingTimer(threading.Timer):
    """A timer whose start returns late, as on a loaded machine."""

    def start(self) -> None:
        super().start()
        time.sleep(0.3)


def watchdogs() -> list[threading.Thread]:
    return [
        thread
        for thread in threading.enumerate()
        if isinstance(thread, SlowStartingTimer) and not thread.finished.is_set()
    ]


def test_an_alarm_while_the_watchdog_starts_leaves_no_watchdog_armed(monkeypatch):
    """Else the forgotten watchdog would stop the process long after the step was over."""
    monkeypatch.setattr("worker.process.threading.Timer", SlowStartingTimer)
    with pytest.raises(SoftTimeLimitExceeded):
        spin_within(0.1)
    assert watchdogs() == []
