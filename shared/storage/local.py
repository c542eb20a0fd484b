"""Storage in a local folder; downloads go through HMAC-signed links served by the API."""

from __future__ import annotations

import mimetypes
import os
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

from shared.errors import ObjectNotFound, TransientStorageError
from shared.signing import link_signature
from shared.storage.base import SignedUrl, Storage, check_key

FILES_ROUTE = "/v1/files/"


class LocalStorage(Storage):
    def __init__(self, root: Path, link_key: str, public_base_url: str = "") -> None:
        """`link_key` signs download links (derived for that purpose from the signing key)."""
        self.root = root.resolve()
        self.link_key = link_key
        self.public_base_url = public_base_url.rstrip("/")
        self.root.mkdir(parents=True, exist_ok=True)

    def path_of(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        target = self.path_of(key)
        try:
            _write_atomically(target, data)
        except OSError as exc:
            # A full or unmounted disk may be back soon: worth retrying (RetryingStorage).
            raise TransientStorageError(f"could not write {key}: {exc}") from exc

    def get(self, key: str) -> bytes:
        try:
            return self.path_of(key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(f"no object {key}") from None

    def exists(self, key: str) -> bool:
        return self.path_of(key).is_file()

    def delete_older_than(self, max_age_s: float, now: float | None = None) -> int:
        """Delete every object last written more than `max_age_s` ago (and emptied
        folders); return how many. Rewriting an object renews it."""
        cutoff = (time.time() if now is None else now) - max_age_s
        deleted = 0
        for path in sorted(self.root.rglob("*"), reverse=True):
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                deleted += 1
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        return deleted

    def signed_url(self, key: str, ttl_s: int) -> SignedUrl:
        check_key(key)
        expires_at = int(time.time()) + ttl_s
        query = urlencode(
            {"expires": expires_at, "sig": link_signature(self.link_key, key, expires_at)}
        )
        return SignedUrl(f"{self.public_base_url}{FILES_ROUTE}{key}?{query}", expires_at)


def _write_atomically(target: Path, data: bytes) -> None:
    """Write then rename, so a reader never sees half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def content_type_of(key: str) -> str:
    return mimetypes.guess_type(key)[0] or "application/octet-stream"
