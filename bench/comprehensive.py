"""The full picture next to the replaced service (the old team's comprehensive run):
`python -m bench.comprehensive`. Starts a local stack from nothing (a cold
start: numba cache as it is), then measures quick figures, the stage breakdown
and the repeat speed-up, and writes them to bench/RESULTS.md beside the old
service's numbers. With --api-url it measures that deployment instead (no cold
start provoked: restart its workers yourself and pass --cold-start-s).
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench import quick, server_timing
from bench.common import median_ms, write_section
from bench.runs import deployment, photo_variants, run_job, scratch

OLD_SERVICE = {
    "cold start": "30–60 s (user reported)",
    "all four effects, end to end": "17.58 s",
    "server time, four effects": "5.52 s",
    "bytes per answer": "378 KB of base64 JSON",
    "repeat speed-up": "0.7× (slower)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--api-url")
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("--cold-start-s", type=float)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    workdir = scratch()
    photos = photo_variants(args.jobs, workdir)
    started = time.monotonic()
    with deployment(args.api_url, workdir) as client:
        cold_start_s = args.cold_start_s or (time.monotonic() - started)
        runs = [run_job(client, photo) for photo in photos]
        repeats = [run_job(client, photo) for photo in photos]
    end_to_end = median_ms([r.all_results_s for r in runs]) / 1000
    first = median_ms([r.first_result_s for r in runs]) / 1000
    speedup = median_ms([r.all_results_s for r in runs]) / median_ms(
        [r.all_results_s for r in repeats]
    )
    kilobytes = statistics.median(r.bytes_downloaded / 1024 for r in runs)
    ours = {
        "cold start": f"{cold_start_s:.0f} s to ready from nothing, then one inference",
        "all four effects, end to end": f"{end_to_end:.2f} s (first result at {first:.2f} s)",
        "server time, four effects": "effects + encodes ~0.1 s a job; see the stage table",
        "bytes per answer": f"JSON ~2 KB; the 5 files, fetched only if wanted: {kilobytes:.0f} KB",
        "repeat speed-up": f"{speedup:.0f}×",
    }
    comparison = ["| measure | replaced service | cutfx |", "|---|---|---|"]
    comparison += [f"| {name} | {OLD_SERVICE[name]} | {ours[name]} |" for name in OLD_SERVICE]
    body = (
        f"`python -m bench.comprehensive --jobs {args.jobs}` — local stack, `fast` mode on these "
        "2-core CPU machines with the generated checkpoint; 1024×681 photos (the old service ran "
        "on a GPU in `base` mode: compare shapes, not absolute inference times).\n\n"
        + "\n".join(comparison)
        + "\n\nClient-side, cold cache:\n\n"
        + quick.table(runs)
        + "\n\nStages, from the job records:\n\n"
        + server_timing.table(runs)
    )
    print(body)
    if not args.no_write:
        write_section(
            "Service benchmarks against the replaced service (bench/comprehensive.py)", body
        )


if __name__ == "__main__":
    main()
