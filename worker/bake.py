"""Prepare a worker before it ever starts: `cutfx bake`.

Puts the checkpoint in place (downloaded from --url and checked against
--sha256, or a generated random one with --random), exports the network to ONNX and
measures every inference engine this machine can run against torch fp32 (the record
the worker chooses its engine by: worker/engine_choice.py), loads the model as a
worker does and runs its warm-up, and every effect once: a checkpoint that does not
load, an export that fails, or an effect that fails, fails the build, not a worker's
start. Nothing is compiled on a start path (no numba kernel). The worker image runs this at
build time; scripts/test.sh runs it in CI, so both prove the same steps.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from shared.errors import ConfigurationError
from shared.settings import Settings

logger = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 60
MEASURED_NOW = "now"
MEASURED_BEFORE = "before, on this machine with these engine packages (--remeasure: again)"
MEASURED_LATER = "not yet (--export-only: a later bake measures them)"


def fetch_verified(url: str, sha256: str, destination: Path) -> Path:
    from shared.errors import ChecksumMismatch
    from worker.checkpoint import download_verified, has_digest

    if has_digest(destination, "sha256", sha256):
        return destination
    try:
        return download_verified(url, destination, "sha256", sha256, DOWNLOAD_TIMEOUT_S)
    except ChecksumMismatch as exc:
        raise SystemExit(f"checkpoint checksum mismatch: {exc}") from None


def place_random_checkpoint(source: Path, destination: Path) -> Path:
    """Copy the stand-in (and the marker that says it is one) where the settings expect it."""
    from worker.checkpoint import RANDOM_MARKER_SUFFIX

    if destination.resolve() == source.resolve():
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, destination)
    shutil.copyfile(str(source) + RANDOM_MARKER_SUFFIX, str(destination) + RANDOM_MARKER_SUFFIX)
    return destination


def warm(settings: Settings, checkpoint: Path) -> dict[str, float | str]:
    """Load the model as a worker does (`settings` name the checkpoint and its mode) and
    run its warm-up inference."""
    from worker.model import load_model

    started = time.perf_counter()
    model = load_model(settings)
    loaded = time.perf_counter() - started
    warmup = model.warm_up()
    return {
        "checkpoint": str(checkpoint),
        "model_id": model.model_id,
        "load_s": round(loaded, 2),
        "warmup_s": round(warmup, 2),
    }


def prepare_engines(
    settings: Settings, checkpoint: Path, remeasure: bool = False, measure: bool = True
) -> dict[str, float | str]:
    """Export the network (once per checkpoint) and measure every engine here against
    torch fp32; the record stays beside the export, for this machine's workers. A record
    this machine already has, made under the engine packages installed now, is kept
    (a minute or more of forwards saved on every later bake) unless `remeasure`.
    Without `measure` only the export is made: the export runs on one core while other
    work runs beside it, and timings taken beside other work would mislead the choice."""
    from worker.batching import effective_batch_max
    from worker.engine_choice import current_record, write_record
    from worker.engine_trial import measure_engines, trial_photos
    from worker.engines import exported_engines_for
    from worker.model import engine_parts, export_missing, resolve_device

    device = resolve_device(settings.device)
    parts = engine_parts(settings, device, checkpoint)
    export_s = 0.0
    if exported_engines_for(device):
        export_s = export_missing(parts, settings.model_mode, checkpoint)
    else:
        logger.info(
            "no exported engine runs here: the network is not exported", extra={"device": device}
        )
    # Timed on the batch the worker forwards: on CUDA a lone photo leaves the GPU waiting
    # on kernel launches, and every engine looks alike.
    batch_size = effective_batch_max(settings.batch_max, device)
    trials = [] if remeasure else current_record(parts.export, device, batch_size)
    if trials:
        measured = MEASURED_BEFORE
        logger.info("engine record kept", extra={"device": device, "measured": measured})
    elif not measure:
        measured = MEASURED_LATER
    else:
        measured = MEASURED_NOW
        trials = measure_engines(parts, trial_photos(), batch_size=batch_size)
        write_record(parts.export, device, trials)
    return {
        "export_s": round(export_s, 1),
        "export_mb": round(parts.export.size_bytes() / 2**20),
        "engines_measured": measured,
        "engines_ms": ", ".join(
            f"{trial.name} {trial.forward_ms:.0f}" + ("" if trial.holds_parity else " (no parity)")
            for trial in trials
        ),
    }


def warm_effects() -> float:
    """Run each effect once on a small cutout: each one's code is proven to run here."""
    import numpy as np

    from effects import EFFECT_NAMES, apply_effect

    started = time.perf_counter()
    cutout = np.full((32, 32, 4), 200, dtype=np.uint8)
    for name in EFFECT_NAMES:
        apply_effect(name, cutout)
    return round(time.perf_counter() - started, 2)


@dataclass(frozen=True)
class CheckpointSource:
    """Where the checkpoint comes from: a URL checked against its sha256, or the generated
    random stand-in; `destination` is where it goes (the stand-in may stay in the cache)."""

    url: str = ""
    sha256: str = ""
    destination: Path | None = None
    random: bool = False
    #: Export the network and measure the engines (off: the worker runs eager torch).
    engines: bool = True
    #: Measure the engines even where this machine's record of them is current.
    remeasure: bool = False
    #: Measure the engines at all (off: export only, and a later bake measures).
    measure: bool = True


def bake(settings: Settings, mode: str, source: CheckpointSource) -> dict[str, float | str]:
    """Put the checkpoint in place, load and warm the model, run every effect once."""
    if source.random:
        from worker.checkpoint import ensure_random_checkpoint

        checkpoint = ensure_random_checkpoint(mode, settings.cache_dir)
        if source.destination is not None:
            checkpoint = place_random_checkpoint(checkpoint, source.destination)
    elif source.url and source.sha256 and source.destination is not None:
        checkpoint = fetch_verified(source.url, source.sha256, source.destination)
    else:
        raise ConfigurationError("give --url with --sha256 and --dest, or --random")
    settings = settings.with_overrides(model_ckpt=str(checkpoint), model_mode=mode)
    engines = (
        prepare_engines(settings, checkpoint, source.remeasure, source.measure)
        if source.engines
        else {}
    )
    return {**engines, **warm(settings, checkpoint), "effects_s": warm_effects()}
