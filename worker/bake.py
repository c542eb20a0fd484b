"""Prepare a worker before it ever starts: `python -m worker.bake`.

Puts the checkpoint in place (downloaded from --url and checked against
--sha256, or a generated random one with --random) and runs one warm-up, and
every effect once, so numba's cache (NUMBA_CACHE_DIR) holds pymatting's and the
effects' compiled kernels. The worker
image runs this at build time; scripts/test.sh runs it in CI, so both prove
the same steps.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from shared.settings import Settings

DOWNLOAD_TIMEOUT_S = 60


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


def warm(settings: Settings, checkpoint: Path, mode: str) -> dict[str, float | str]:
    """Load the model as a worker does and run its warm-up inference."""
    from worker.model import load_model

    started = time.perf_counter()
    model = load_model(settings.with_overrides(model_ckpt=str(checkpoint), model_mode=mode))
    loaded = time.perf_counter() - started
    warmup = model.warm_up()
    return {
        "checkpoint": str(checkpoint),
        "model_id": model.model_id,
        "numba_cache_dir": os.environ.get("NUMBA_CACHE_DIR", "(numba default)"),
        "load_s": round(loaded, 2),
        "warmup_s": round(warmup, 2),
    }


def warm_effects() -> float:
    """Run each effect once on a small cutout: their numba kernels compile into the cache."""
    import numpy as np

    from effects import EFFECT_NAMES, apply_effect

    started = time.perf_counter()
    cutout = np.full((32, 32, 4), 200, dtype=np.uint8)
    for name in EFFECT_NAMES:
        apply_effect(name, cutout)
    return round(time.perf_counter() - started, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", default=os.environ.get("CUTFX_MODEL_MODE", "base"))
    parser.add_argument("--url", default="", help="checkpoint URL (release or mirror)")
    parser.add_argument("--sha256", default="", help="expected sha256 of the checkpoint")
    parser.add_argument("--dest", type=Path, help="where the fetched checkpoint goes")
    parser.add_argument("--random", action="store_true", help="use a generated random checkpoint")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    if args.random:
        from worker.checkpoint import ensure_random_checkpoint

        checkpoint = ensure_random_checkpoint(args.mode, settings.cache_dir)
        if args.dest is not None:
            checkpoint = place_random_checkpoint(checkpoint, args.dest)
    elif args.url:
        if not args.sha256 or args.dest is None:
            parser.error("--url needs --sha256 and --dest")
        checkpoint = fetch_verified(args.url, args.sha256, args.dest)
    else:
        parser.error("give --url with --sha256 and --dest, or --random")
    print(json.dumps({**warm(settings, checkpoint, args.mode), "effects_s": warm_effects()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
