"""Every engine this machine can run, measured against torch fp32 (`cutfx bake`).

On the same prepared photos, all three in one batch (the batch axis is part of what is
proven): each engine's forward time for one photo, or a photo's share of a batch's where
the worker batches (CUDA), the median of three timed forwards, the correlation of its
raw logits with torch fp32's and their mean relative difference, and how far its masks
move. No forward goes untimed before them: the parity batch has already paid each
engine's compilation, and a first forward at the timing batch that costs more still is
one of the median's three, not the median. The result is written beside
the export for this machine (worker/engine_choice.py reads it at every start) and is
what bench/engine.py reports.
"""

from __future__ import annotations

import gc
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from worker.engine_choice import EngineTrial, can_run
from worker.engines import ENGINES, Engine, EngineParts, build_engine
from worker.model import mask_from_logits, prepared_input

logger = logging.getLogger(__name__)

#: Timed forwards per engine: a median that leaves out one slow forward, few enough that
#: a bake measures a CPU's four engines in about a minute on one thread. An untimed forward
#: before them cost a bake one forward an engine and changed nothing: on a Zen 4 EPYC at
#: one thread, the first forward after the parity batch was within 4 % of the median of
#: the next three, for each of the four CPU engines.
TRIAL_RUNS = 3
REFERENCE_ENGINE = "torch-fp32"


def trial_photos() -> list[npt.NDArray[np.uint8]]:
    """Three photos of different shapes, made here (an image need not ship a sample): a
    lit, textured oval subject on a graded, noisy background."""
    rng = np.random.default_rng(7)
    photos = []
    for height, width in ((480, 640), (600, 400), (512, 512)):
        rows, columns = np.mgrid[0:height, 0:width].astype(np.float64)
        oval = ((rows / height - 0.55) / 0.3) ** 2 + ((columns / width - 0.5) / 0.25) ** 2 < 1
        background = np.stack([rows / height, columns / width, 1 - rows / height], axis=-1)
        subject = np.stack([0.8 + 0.1 * np.sin(columns / 9), 0.6 + 0 * rows, 0.3 + 0 * rows], -1)
        photo = np.where(oval[..., None], subject, background) * 220
        photo += rng.normal(0, 12, photo.shape)
        photos.append(np.clip(photo, 0, 255).astype(np.uint8))
    return photos


def forward_seconds(
    engine: Engine,
    batch: torch.Tensor,
    runs: int = TRIAL_RUNS,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """The median of `runs` timed forwards of `batch` (see the module's doc)."""
    samples = []
    for _ in range(runs):
        started = clock()
        engine.logits(batch)
        samples.append(clock() - started)
    return statistics.median(samples)


def masks(logits: torch.Tensor, shapes: Sequence[tuple[int, ...]]) -> list[npt.NDArray[np.float64]]:
    """The 0..255 masks the worker would make of each photo's logits."""
    return [
        mask_from_logits(each, shape).astype(np.float64) * 255
        for each, shape in zip(logits.unbind(0), shapes, strict=True)
    ]


@dataclass(frozen=True)
class Reference:
    """The photos prepared once, and torch fp32's logits and masks of them: what every
    engine is compared with."""

    inputs: torch.Tensor
    shapes: list[tuple[int, ...]]
    logits: torch.Tensor
    masks: list[npt.NDArray[np.float64]]


def reference_of(
    engine: Engine, photos: Sequence[npt.NDArray[np.uint8]], input_size: tuple[int, int]
) -> Reference:
    inputs = torch.stack([prepared_input(photo, input_size) for photo in photos])
    shapes = [photo.shape for photo in photos]
    logits = engine.logits(inputs).float().cpu()
    return Reference(inputs, shapes, logits, masks(logits, shapes))


def relative_difference(found: torch.Tensor, reference: torch.Tensor) -> float:
    """The mean absolute difference of two sets of logits over the reference's mean
    magnitude: random-weight logits correlate almost perfectly, and differ in scale."""
    return float((found - reference).abs().mean() / reference.abs().mean())


def timing_batch(inputs: torch.Tensor, batch_size: int) -> torch.Tensor:
    """`batch_size` of the prepared photos, taken in turn: what an engine is timed on."""
    return inputs[torch.arange(batch_size) % inputs.shape[0]]


def compared(
    name: str,
    engine: Engine,
    logits: torch.Tensor,
    reference: Reference,
    runs: int,
    batch_size: int = 1,
) -> EngineTrial:
    """`engine`'s trial, from its `logits` of the reference's photos and a photo's share
    of its forward of `batch_size` photos."""
    differences = [
        np.abs(ours - theirs)
        for ours, theirs in zip(masks(logits, reference.shapes), reference.masks, strict=True)
    ]
    pair = torch.stack([reference.logits.flatten().double(), logits.flatten().double()])
    return EngineTrial(
        name=name,
        precision=ENGINES[name].precision,
        forward_ms=round(
            forward_seconds(engine, timing_batch(reference.inputs, batch_size), runs)
            * 1000
            / batch_size,
            1,
        ),
        logit_correlation=round(float(torch.corrcoef(pair)[0, 1]), 7),
        logit_relative_difference=round(relative_difference(logits, reference.logits), 7),
        mask_max_difference_255=round(max(float(d.max()) for d in differences), 3),
        mask_mean_difference_255=round(statistics.fmean(float(d.mean()) for d in differences), 4),
        batch_size=batch_size,
    )


def measure_engines(
    parts: EngineParts,
    photos: Sequence[npt.NDArray[np.uint8]],
    names: Sequence[str] = (),
    runs: int = TRIAL_RUNS,
    batch_size: int = 1,
) -> list[EngineTrial]:
    """Each engine of `names` (every one this machine can run when empty) against torch
    fp32 on `photos`, timed on batches of `batch_size`; the reference is measured first,
    and is a trial too."""
    reference_engine = build_engine(REFERENCE_ENGINE, parts)
    reference = reference_of(reference_engine, photos, parts.input_size)
    trials = [
        compared(REFERENCE_ENGINE, reference_engine, reference.logits, reference, runs, batch_size)
    ]
    del reference_engine
    for name in names or ENGINES:
        if name == REFERENCE_ENGINE or not can_run(name, parts.device, parts.export):
            continue
        started = time.perf_counter()
        engine = build_engine(name, parts)
        built_s = time.perf_counter() - started
        logits = engine.logits(reference.inputs).float().cpu()
        trials.append(compared(name, engine, logits, reference, runs, batch_size))
        logger.info(
            "engine measured",
            extra={
                "engine": name,
                "build_s": round(built_s, 2),
                "forward_ms": trials[-1].forward_ms,
                "logit_correlation": trials[-1].logit_correlation,
                "holds_parity": trials[-1].holds_parity,
            },
        )
        del engine
        gc.collect()
    return trials
