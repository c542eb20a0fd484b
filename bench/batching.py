"""Photos per second through the model at batch sizes 1, 2, 4 and 8: `python -m bench.batching`.

The worker's model as `CUTFX_*` configures it (fast mode and the generated
checkpoint unless told otherwise; the precision the device gets), distinct
photos. Two figures per batch size, medians of N rounds after a warm-up round:
the forward alone (one `saliency` call on B prepared inputs), and the whole
segment path as a batching worker runs it (B threads each preparing and
finishing its own photo around one shared forward, through the Batcher).
Writes bench/RESULTS.md. On a GPU this is the script to size CUTFX_BATCH_MAX with.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt
from PIL import Image

from bench.common import median_s, publish, random_checkpoint
from cli import service_settings
from tests.helpers import SAMPLE
from worker.batching import Batcher
from worker.model import LoadedModel, load_model

BATCH_SIZES = (1, 2, 4, 8)
#: Long enough for every thread of a batch to arrive, short against a forward.
BENCH_BATCH_WAIT_S = 0.05

Photo = npt.NDArray[np.uint8]


def distinct_photos(count: int) -> list[Photo]:
    """The sample, flipped and cropped `count` ways: the same size class, other pixels."""
    sample = np.asarray(Image.open(SAMPLE).convert("RGB"))
    photos = []
    for index in range(count):
        shifted = np.roll(sample, shift=17 * index, axis=1)
        photos.append(np.ascontiguousarray(shifted[:, ::-1] if index % 2 else shifted))
    return photos


def forward_only(model: LoadedModel, photos: list[Photo], rounds: int) -> float:
    inputs = [model.prepare(photo) for photo in photos]
    return median_s(lambda: model.saliency(inputs), rounds)


def through_the_batcher(model: LoadedModel, photos: list[Photo], rounds: int) -> float:
    batcher = Batcher(model.saliency, len(photos), BENCH_BATCH_WAIT_S)

    def one(photo: Photo) -> None:
        model.finish(photo, batcher.run(model.prepare(photo)))

    try:
        with ThreadPoolExecutor(len(photos)) as pool:
            return median_s(lambda: list(pool.map(one, photos)), rounds)
    finally:
        batcher.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    settings = service_settings()
    if not settings.model_ckpt:
        settings = settings.with_overrides(
            model_mode="fast", model_ckpt=str(random_checkpoint("fast"))
        )
    model = load_model(settings)
    model.warm_up()
    rows = []
    single: dict[str, float] = {}
    for size in BATCH_SIZES:
        photos = distinct_photos(size)
        figures = {
            "forward": forward_only(model, photos, args.rounds) / size,
            "segment": through_the_batcher(model, photos, args.rounds) / size,
        }
        single = single or figures
        rows.append(
            f"| {size} | {figures['forward'] * 1000:.0f} ms | {1 / figures['forward']:.2f} "
            f"| {single['forward'] / figures['forward']:.2f}× "
            f"| {figures['segment'] * 1000:.0f} ms | {1 / figures['segment']:.2f} "
            f"| {single['segment'] / figures['segment']:.2f}× |"
        )
        print(rows[-1], flush=True)
    body = (
        f"`python -m bench.batching --rounds {args.rounds}` — {settings.model_mode} mode, "
        f"{model.device}, {model.precision}, distinct 451×300 photos; per photo, medians.\n\n"
        "| batch | forward per photo | photos/s | vs batch 1 | segment per photo "
        "(prepare, shared forward, finish) | photos/s | vs batch 1 |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(rows)
    )
    section = f"Batching on {model.device.split(':')[0]} (bench/batching.py)"
    publish(section, body, not args.no_write)


if __name__ == "__main__":
    main()
