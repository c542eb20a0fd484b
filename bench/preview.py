"""Time to a `preview=true` job's preview and to its cutout, base mode on a CPU:
`python -m bench.preview`.

A local stack whose gpu worker runs `base` (1024²) with the generated
checkpoint, and the same checkpoint as the `fast` preview model; distinct
1024×681 photos one after another, cutout only (no effects); per job the
seconds from submit to the `preview` event and to the `cutout` event, as a
page following the events sees them. Writes bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time

from bench.common import publish, random_checkpoint
from bench.runs import local_stack, photo_variants, scratch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    workdir = scratch()
    photos = photo_variants(args.jobs, workdir)
    # The generated checkpoint serves both: the gpu worker's base model and its fast preview.
    base_with_preview = {
        "CUTFX_MODEL_MODE": "base",
        "CUTFX_PREVIEW_CKPT": str(random_checkpoint("fast")),
    }
    seen: dict[str, list[float]] = {"preview": [], "cutout": []}
    with local_stack(workdir, 8600, settings=base_with_preview) as (_, client):
        for photo in photos:
            started = time.monotonic()
            job = client.submit(photo, effects="color", preview="true")
            for event in client.events(job["id"]):
                name = event.data.get("name")
                if event.type == "result.succeeded" and name in seen:
                    seen[name].append(time.monotonic() - started)
    shutil.rmtree(workdir, ignore_errors=True)
    preview, cutout = statistics.median(seen["preview"]), statistics.median(seen["cutout"])
    body = (
        f"`python -m bench.preview --jobs {args.jobs}` — gpu worker in `base` mode on the CPU "
        "(solo pool), `fast` preview model, generated checkpoint, 1024×681 photos; medians "
        "from submit.\n\n"
        "| preview event | cutout event | preview / cutout |\n|---|---|---|\n"
        f"| {preview:.2f} s | {cutout:.2f} s | {preview / cutout:.2f} |"
    )
    publish("Preview in base mode (bench/preview.py)", body, not args.no_write)


if __name__ == "__main__":
    main()
