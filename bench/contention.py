"""Forwards side by side: `python -m bench.contention`.

A worker rarely has the CPU to itself: the cpu worker's effects, the API and, on a
machine shared out by process, other gpu workers run beside it. This runs the exported
engines (worker/engines.py, built as a worker builds them) in one process and in one
process per core at once, each on every core's threads and on its share of them, and
prints each process's median forward and the CPU seconds each forward cost. Writes
bench/RESULTS.md unless --no-write.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from bench.common import publish, random_checkpoint
from cli.stack import thread_env, threads_per_process

ENGINES_MEASURED = ("openvino-fp32", "onnxruntime-fp32")
FORWARDS = 5
#: Children build their engines first, then start their forwards at this moment, so
#: that the forwards overlap whatever each one's load took.
START_AFTER_S = 25.0


def child(engine: str, start_at: float) -> None:
    """One process: the engine loaded as a worker loads it, FORWARDS timed forwards."""
    import torch

    from shared.settings import Settings
    from worker.model import load_model

    settings = Settings.from_env().with_overrides(
        model_mode="fast", model_ckpt=str(random_checkpoint("fast")), device="cpu", engine=engine
    )
    model = load_model(settings)
    built = model.engine
    batch = torch.rand(1, 3, *model.input_size)
    built.logits(batch)
    time.sleep(max(0.0, start_at - time.time()))
    seconds, cpu_before = [], time.process_time()
    for _ in range(FORWARDS):
        started = time.perf_counter()
        built.logits(batch)
        seconds.append(time.perf_counter() - started)
    cpu_per_forward = (time.process_time() - cpu_before) / FORWARDS
    print(json.dumps({"forward_s": statistics.median(seconds), "cpu_s": cpu_per_forward}))


def side_by_side(engine: str, processes: int, threads: int) -> list[dict[str, float]]:
    """Each of `processes` children's figures, run at once on `threads` threads each."""
    start_at = time.time() + START_AFTER_S
    environment = {**os.environ, **thread_env(threads)}
    command = [sys.executable, "-m", "bench.contention", "--child", engine, str(start_at)]
    children = [
        subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    found = []
    for process in children:
        output, _ = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"{engine} on {threads} threads failed ({process.returncode})")
        found.append(json.loads(output.strip().splitlines()[-1]))
    return found


def levels() -> list[tuple[int, int]]:
    """(processes, threads each): one process on every core and on one, then a process
    per core on every core (as workers left at their defaults) and on its share."""
    cores = os.cpu_count() or 1
    found = [(1, cores), (1, 1), (cores, cores), (cores, threads_per_process(cores))]
    return list(dict.fromkeys(found))  # one core: the four are one


def report(rows: list[str]) -> str:
    return (
        f"{FORWARDS} forwards of one 384² photo in each process, started together; "
        "figures are each process's median forward and CPU seconds per forward.\n\n"
        "| engine | processes × threads | forward (each process) | CPU s per forward |\n"
        "|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, metavar=("ENGINE", "START_AT"), help=argparse.SUPPRESS)
    parser.add_argument("--engines", nargs="+", default=list(ENGINES_MEASURED))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], float(args.child[1]))
        return
    rows = []
    for engine in args.engines:
        for processes, threads in levels():
            found = side_by_side(engine, processes, threads)
            forwards = " / ".join(f"{each['forward_s']:.2f} s" for each in found)
            cpu = statistics.mean(each["cpu_s"] for each in found)
            rows.append(f"| {engine} | {processes} × {threads} | {forwards} | {cpu:.2f} |")
            print(rows[-1], flush=True)
    publish("Forwards side by side (bench/contention.py)", report(rows), not args.no_write)


if __name__ == "__main__":
    main()
