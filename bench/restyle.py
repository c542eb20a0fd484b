"""Re-styling a photo with other output options: `python -m bench.restyle`.

One photo's cold job first; then N re-styles, each with a new background colour
(plus crop and a preview size), which run no model (the cutout is cached) but
render every result anew on the cpu workers; then each re-style repeated, which
the API answers in the 202 with every result. Writes bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from bench.common import median_ms, p95_ms, write_section
from bench.runs import deployment, photo_variants, scratch
from cli.client import CutfxClient


def until_finished(client: CutfxClient, job: dict[str, object]) -> None:
    if job["status"] in ("succeeded", "failed", "partial", "canceled"):
        return
    for event in client.events(str(job["id"])):
        if event.type == "job.finished":
            return


def restyles(client: CutfxClient, photo: Path, count: int) -> tuple[list[float], list[float]]:
    until_finished(client, client.submit(photo))
    fresh, repeated = [], []
    for index in range(count):
        options = {"background": f"#{index * 12:02x}80c0", "crop": "true", "size": "preview"}
        started = time.monotonic()
        until_finished(client, client.submit(photo, **options))
        fresh.append(time.monotonic() - started)
        started = time.monotonic()
        again = client.submit(photo, **options)
        repeated.append(time.monotonic() - started)
        if again["status"] != "succeeded":
            raise RuntimeError(f"a repeated re-style was not answered in the 202: {again}")
    return fresh, repeated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--restyles", type=int, default=20)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    workdir = scratch()
    with deployment(None, workdir) as client:
        photo = photo_variants(1, workdir)[0]
        fresh, repeated = restyles(client, photo, args.restyles)
    shutil.rmtree(workdir, ignore_errors=True)
    body = (
        f"`python -m bench.restyle --restyles {args.restyles}` — one 1024×681 photo, `fast` "
        "mode on the CPU, all four effects, each re-style a new background colour with crop "
        "and size=preview; gunicorn + local storage, client on loopback.\n\n"
        "| measure | median | p95 |\n|---|---|---|\n"
        f"| re-style, submit → job.finished (no model: cutout and effects rendered anew) "
        f"| {median_ms(fresh):.0f} ms | {p95_ms(fresh):.0f} ms |\n"
        f"| the same re-style again, submit → 202 with every result "
        f"| {median_ms(repeated):.1f} ms | {p95_ms(repeated):.1f} ms |\n"
    )
    print(body)
    if not args.no_write:
        write_section("Re-styling with output options (bench/restyle.py)", body)


if __name__ == "__main__":
    main()
