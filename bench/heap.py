"""The worker's heap kept against returned: `python -m bench.heap`.

worker/memory.py keeps freed arrays in the heap instead of returning them to the system.
This runs, in a fresh process each way and interleaved, eager fp32 forwards (the engine
of base mode and of machines without an exported pick) on one thread, and the four
effects on a 12 MP cutout, and prints each one's median time, the kernel's share of it,
page faults and the resident size after. Writes bench/RESULTS.md unless --no-write.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.common import publish, random_checkpoint
from bench.engine import current_rss_mb
from cli.stack import thread_env

HEAPS = ("returned", "kept")
FORWARDS = 5
EFFECT_RUNS = 3
ROUNDS = 2
SECTION = "The worker's heap, kept against returned (bench/heap.py)"


def measured(call: Callable[[], Any], runs: int) -> dict[str, float]:
    """Median wall seconds of `runs` calls after one unmeasured, and per call the kernel's
    seconds and page faults."""
    call()
    seconds = []
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(runs):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "s": statistics.median(seconds),
        "sys_s": (after.ru_stime - before.ru_stime) / runs,
        "faults": (after.ru_minflt - before.ru_minflt) / runs,
        "rss_mb": current_rss_mb(),
    }


def child(heap: str) -> None:
    import torch

    from bench.effects import photo_cutout
    from effects import EFFECT_NAMES, apply_effect
    from shared.settings import Settings
    from worker.engines import build_engine
    from worker.memory import keep_freed_memory
    from worker.model import engine_parts

    if heap == "kept":
        keep_freed_memory()
    # Built directly rather than by load_model, which keeps the heap whatever the heap.
    checkpoint = random_checkpoint("fast")
    settings = Settings.from_env().with_overrides(model_mode="fast", model_ckpt=str(checkpoint))
    engine = build_engine("torch-fp32", engine_parts(settings, "cpu", checkpoint))
    batch = torch.rand(1, 3, 384, 384)
    forward = measured(lambda: engine.logits(batch), FORWARDS)
    cutout = photo_cutout(3000, 4000)
    effects = measured(lambda: [apply_effect(name, cutout) for name in EFFECT_NAMES], EFFECT_RUNS)
    print(json.dumps({"forward": forward, "effects": effects}))


def run_child(heap: str) -> dict[str, dict[str, float]]:
    environment = {**os.environ, **thread_env(1)}
    done = subprocess.run(
        [sys.executable, "-m", "bench.heap", "--child", heap],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])


def row(heap: str, stage: str, figures: dict[str, float]) -> str:
    return (
        f"| {heap} | {stage} | {figures['s']:.2f} s | {figures['sys_s']:.2f} s "
        f"| {figures['faults']:,.0f} | {figures['rss_mb']:,.0f} MB |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", choices=HEAPS)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    rows = [
        "| heap | stage | median | kernel's s | page faults | resident after |",
        "|---|---|---|---|---|---|",
    ]
    for _ in range(ROUNDS):
        for heap in HEAPS:
            figures = run_child(heap)
            rows.append(row(heap, f"fast forward, torch-fp32 ×{FORWARDS}", figures["forward"]))
            rows.append(row(heap, f"four effects, 12 MP ×{EFFECT_RUNS}", figures["effects"]))
    body = (
        "`python -m bench.heap`: one thread, a fresh process for each heap, "
        f"{ROUNDS} rounds interleaved.\n\n" + "\n".join(rows)
    )
    publish(SECTION, body, not args.no_write)


if __name__ == "__main__":
    main()
