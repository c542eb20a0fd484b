"""Jobs per second with 1, 4 and 16 jobs in flight: `python -m bench.throughput`.

Distinct ~1 MP photos (the sample at 1224×816, one pixel changed each: no cache
hits) through a local stack (fast mode, the generated checkpoint, all four
effects); at each level, jobs per second and the p50/p95 time to the first
result and to all results, as a shop's pages see them (events followed, results
downloaded). The same work done in one process with no queue or storage gives
the ratio. Writes bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.common import median_ms, p95_ms, write_section
from bench.latency import in_one_process
from bench.runs import JobRun, local_stack, photo_variants, run_job, scratch
from cli.client import CutfxClient

ONE_MEGAPIXEL_LONG_SIDE = 1224
LEVELS = (1, 4, 16)


def at_level(client: CutfxClient, photos: list[Path], in_flight: int) -> tuple[float, list[JobRun]]:
    started = time.monotonic()
    with ThreadPoolExecutor(in_flight) as pool:
        runs = list(pool.map(lambda photo: run_job(client, photo), photos))
    elapsed = time.monotonic() - started
    failed = [run.job["id"] for run in runs if run.job["status"] != "succeeded"]
    if failed:
        raise RuntimeError(f"{len(failed)} jobs did not succeed, e.g. {failed[0]}")
    return len(photos) / elapsed, runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    workdir = scratch()
    photos = photo_variants(args.jobs * (len(LEVELS) + 1), workdir, ONE_MEGAPIXEL_LONG_SIDE)
    batches = [photos[i * args.jobs : (i + 1) * args.jobs] for i in range(len(LEVELS) + 1)]
    rows = []
    with local_stack(workdir) as (_, client):
        for level, batch in zip(LEVELS, batches, strict=False):
            rate, runs = at_level(client, batch, level)
            firsts = [run.first_result_s for run in runs]
            alls = [run.all_results_s for run in runs]
            rows.append((level, rate, firsts, alls))
            print(level, f"{rate:.2f} jobs/s", flush=True)
    one_process = in_one_process(batches[-1])
    baseline_rate = len(one_process) / sum(one_process)
    shutil.rmtree(workdir, ignore_errors=True)
    lines = [
        "| in flight | jobs/s | vs one process | first result p50 / p95 | all results p50 / p95 |",
        "|---|---|---|---|---|",
    ]
    for level, rate, firsts, alls in rows:
        lines.append(
            f"| {level} | {rate:.2f} | {rate / baseline_rate:.2f}× "
            f"| {median_ms(firsts):.0f} / {p95_ms(firsts):.0f} ms "
            f"| {median_ms(alls):.0f} / {p95_ms(alls):.0f} ms |"
        )
    lines.append(
        f"| one process, no queue | {baseline_rate:.2f} | 1.00× | — "
        f"| {median_ms(one_process):.0f} / {p95_ms(one_process):.0f} ms |"
    )
    body = (
        f"`python -m bench.throughput --jobs {args.jobs}` — {args.jobs} distinct 1224×816 "
        "photos per level, all four effects, fast mode with the generated checkpoint, a local "
        "stack (one solo gpu worker, a cpu worker with 2 processes, gunicorn), client on "
        "loopback following events and downloading every result.\n\n" + "\n".join(lines) + "\n"
    )
    print(body)
    if not args.no_write:
        write_section("Throughput (bench/throughput.py)", body)


if __name__ == "__main__":
    main()
