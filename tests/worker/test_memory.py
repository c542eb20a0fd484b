"""worker/memory.py: a worker's freed arrays stay in its heap for the next photo."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import REPO
from worker import memory

#: Each round allocates, writes and frees this much, as a forward or an effect does.
ARRAY_BYTES = 256 * 1024 * 1024

ROUNDS = f"""
import json, resource, sys
import numpy as np
from worker.memory import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
faults = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    array = np.empty({ARRAY_BYTES}, dtype=np.uint8)
    array.fill(1)
    del array
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({{"kept": kept, "faults": faults}}))
"""


def page_faults(mode: str) -> dict[str, Any]:
    """Minor page faults of three rounds in a fresh process, its heap kept or not."""
    done = subprocess.run(
        [sys.executable, "-c", ROUNDS, mode], cwd=REPO, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_kept_heap_serves_the_next_photos_arrays_without_new_pages():
    returned, kept = page_faults("return"), page_faults("keep")
    assert kept["kept"] is True
    # Returned to the system, every round faults fresh pages in (huge pages, where the
    # kernel gives them, make it fewer faults); kept, only the first round does.
    first: int
    first, *later = returned["faults"]
    assert all(faults >= first // 2 for faults in later), returned
    assert kept["faults"][0] >= first // 2, kept
    assert all(faults * 20 < first for faults in kept["faults"][1:]), (kept, returned)


def test_the_settings_are_made_once_per_process(monkeypatch):
    made: list[tuple[int, int]] = []

    def mallopt(parameter: int, value: int) -> int:
        made.append((parameter, value))
        return 1

    monkeypatch.setattr(memory, "_kept", False)
    monkeypatch.setattr(memory, "_glibc_mallopt", lambda: mallopt)
    assert memory.keep_freed_memory() is True
    assert memory.keep_freed_memory() is True
    assert sorted(made) == sorted(
        {
            memory.M_MMAP_THRESHOLD: memory.NEVER,
            memory.M_TRIM_THRESHOLD: memory.NEVER,
            memory.M_TOP_PAD: memory.HEAP_GROWTH_BYTES,
        }.items()
    )


def test_without_glibc_nothing_is_changed_and_it_says_so(monkeypatch, caplog):
    monkeypatch.setattr(memory, "_kept", False)
    monkeypatch.setattr(memory, "_glibc_mallopt", lambda: None)
    with caplog.at_level("INFO", logger="worker.memory"):
        assert memory.keep_freed_memory() is False
    assert "no mallopt" in caplog.text
