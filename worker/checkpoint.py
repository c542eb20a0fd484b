"""Checkpoints: the model's identity, and a randomly initialised stand-in for offline machines.

The stand-in has InSPyReNet's real architecture and loads through
transparent-background's real code, so every path runs as in production; its
masks are meaningless. A marker file beside it says so, and the worker warns.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from shared.errors import ChecksumMismatch
from worker.network import mode_config, new_network

logger = logging.getLogger(__name__)

RANDOM_SEED = 0
RANDOM_MARKER_SUFFIX = ".random"
DIGEST_SUFFIX = ".sha256.json"
_HASH_CHUNK = 8 * 1024 * 1024


def random_checkpoint_path(mode: str, cache_dir: Path) -> Path:
    """Where the stand-in for `mode` is kept in `cache_dir` (the settings' CUTFX_CACHE_DIR)."""
    return cache_dir / f"inspyrenet-swinb-{mode}-random-seed{RANDOM_SEED}.pth"


def is_random_checkpoint(path: Path) -> bool:
    return Path(str(path) + RANDOM_MARKER_SUFFIX).exists()


def ensure_random_checkpoint(mode: str, cache_dir: Path) -> Path:
    """Make (once) and return a randomly initialised checkpoint for `mode`."""
    path = random_checkpoint_path(mode, cache_dir)
    if path.exists() and is_random_checkpoint(path):
        return path
    import torch

    torch.manual_seed(RANDOM_SEED)
    model = new_network(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save(model.state_dict(), partial)
    os.replace(partial, path)
    Path(str(path) + RANDOM_MARKER_SUFFIX).write_text(
        "randomly initialised InSPyReNet (Swin-B): real architecture, meaningless masks\n"
    )
    logger.info("generated random checkpoint", extra={"path": str(path), "mode": mode})
    return path


def checkpoint_digest(path: Path) -> str:
    """sha256 of the checkpoint, remembered beside it (keyed by size and mtime)."""
    stat = path.stat()
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    sidecar = Path(str(path) + DIGEST_SUFFIX)
    try:
        cached = json.loads(sidecar.read_text())
        if cached["stamp"] == stamp:
            return str(cached["sha256"])
    except (OSError, ValueError, KeyError):
        pass
    sha = file_digest(path)
    try:
        sidecar.write_text(json.dumps({"stamp": stamp, "sha256": sha}))
    except OSError:
        logger.warning("could not cache the checkpoint digest", extra={"path": str(sidecar)})
    return sha


def model_id(mode: str, checkpoint: Path) -> str:
    return f"inspyrenet-swinb-{mode}-{checkpoint_digest(checkpoint)[:16]}"


def release_checkpoint_path(mode: str) -> Path:
    """Where transparent-background keeps (and looks for) its release checkpoint."""
    home = os.environ.get("TRANSPARENT_BACKGROUND_FILE_PATH", str(Path.home()))
    return Path(home) / ".transparent-background" / str(mode_config(mode)["ckpt_name"])


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def has_digest(path: Path, algorithm: str, expected: str | None) -> bool:
    """The file exists and matches (any file matches when no digest is published)."""
    return path.is_file() and (not expected or file_digest(path, algorithm) == expected)


def download_verified(
    url: str, destination: Path, algorithm: str, expected: str | None, timeout_s: float
) -> Path:
    """Download with pooch, which checks the digest before it moves the file in place.

    A file already there with the right digest is kept. Raises OSError
    (requests' errors are OSErrors) when the download fails and
    ChecksumMismatch when the bytes are not the ones expected; either way
    nothing is left half-written.
    """
    import pooch

    pooch.get_logger().setLevel(logging.WARNING)
    try:
        fetched = pooch.retrieve(
            url,
            known_hash=f"{algorithm}:{expected}" if expected else None,
            fname=destination.name,
            path=destination.parent,
            downloader=pooch.HTTPDownloader(progressbar=False, timeout=timeout_s),
        )
    except ValueError as exc:
        raise ChecksumMismatch(f"{url}: {exc}") from None
    return Path(fetched)


def fetch_release_checkpoint(mode: str, timeout_s: float = 15.0) -> Path | None:
    """The real checkpoint: already downloaded, or downloaded now; None when offline."""
    config = mode_config(mode)
    target = release_checkpoint_path(mode)
    if has_digest(target, "md5", config["md5"]):
        return target
    try:
        return download_verified(str(config["url"]), target, "md5", config["md5"], timeout_s)
    except (OSError, TimeoutError, ChecksumMismatch) as exc:
        logger.warning("release checkpoint not downloadable", extra={"reason": str(exc)})
        return None
