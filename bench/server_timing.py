"""Where a job's time goes, stage by stage (the old team's server-timing-analyzer):
`python -m bench.server_timing`. Reads each job record's timings and the API's
Server-Timing header; median and p95 over --jobs distinct photos.
"""

from __future__ import annotations

from bench.common import median_ms, p95_ms
from bench.runs import JobRun, report_jobs, stage_seconds


def table(runs: list[JobRun]) -> str:
    merged: dict[str, list[float]] = {}
    for run in runs:
        for stage, values in stage_seconds(run.job).items():
            merged.setdefault(stage, []).extend(values)
    rows = ["| stage (per result) | median | p95 |", "|---|---|---|"]
    for stage in ("queue_wait", "download", "inference", "effect", "encode", "upload"):
        if stage in merged:
            values = merged[stage]
            rows.append(f"| {stage} | {median_ms(values):.1f} ms | {p95_ms(values):.1f} ms |")
    totals = [run.job["timings"]["total_s"] for run in runs]
    rows.append(
        f"| job, submit to last result | {median_ms(totals):.0f} ms | {p95_ms(totals):.0f} ms |"
    )
    return "\n".join(rows)


if __name__ == "__main__":
    report_jobs(__doc__, table)
