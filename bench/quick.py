"""Quick check of a running cutfx (the old team's simple-api-test): `python -m bench.quick`.

Time to first result, to all results, and bytes a client downloads per job,
median and p95 over --jobs distinct photos. --api-url targets a deployment;
without it a local stack is started.
"""

from __future__ import annotations

import statistics

from bench.common import median_ms, p95, p95_ms
from bench.runs import JobRun, report_jobs


def table(runs: list[JobRun]) -> str:
    rows = ["| measure | median | p95 |", "|---|---|---|"]
    for label, values in (
        ("202 answered", [r.accepted_s for r in runs]),
        ("first result (event)", [r.first_result_s for r in runs]),
        ("all results (job finished)", [r.all_results_s for r in runs]),
    ):
        rows.append(f"| {label} | {median_ms(values):.0f} ms | {p95_ms(values):.0f} ms |")
    kilobytes = [r.bytes_downloaded / 1024 for r in runs]
    rows.append(
        f"| downloaded per job (cutout + 4 effects) | {statistics.median(kilobytes):.0f} KB "
        f"| {p95(kilobytes):.0f} KB |"
    )
    return "\n".join(rows)


if __name__ == "__main__":
    report_jobs(__doc__, table)
