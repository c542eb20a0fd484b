"""Where inputs and results live: the storage interface, the local-folder backend with
its HMAC-signed download links, the retries every backend's calls get, and the choice of
backend by the settings (Google Cloud Storage lives in `shared.gcs`).

Riding out storage faults: a TransientStorageError (a timeout, a reset, a 5xx or 429, a
failed disk write) is retried with jittered exponential backoff (tenacity) until the
budget (CUTFX_STORAGE_RETRY_S) is spent; then it propagates and the result fails with
`storage_unavailable`. Other errors are not retried.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import mimetypes
import os
import re
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlencode

from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from shared.errors import Forbidden, ObjectNotFound, TransientStorageError
from shared.settings import Settings
from shared.signing import Purpose, derive_key

logger = logging.getLogger(__name__)

T = TypeVar("T")


#: Keys are content addresses like "results/ab/abcdef.webp": no traversal, no absolute paths.
VALID_KEY = re.compile(r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-][A-Za-z0-9_.\-]*)*$")


@dataclass(frozen=True)
class SignedUrl:
    url: str
    expires_at: int


class Storage(ABC):
    """put / get / exists / signed_url over object keys."""

    @abstractmethod
    def put(self, key: str, data: bytes, content_type: str) -> None: ...

    @abstractmethod
    def get(self, key: str) -> bytes: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; no error when there is none."""

    @abstractmethod
    def signed_url(self, key: str, ttl_s: int) -> SignedUrl: ...

    def unwrapped(self) -> Storage:
        """The backend itself, under any wrapper (retries)."""
        return self


def check_key(key: str) -> str:
    if not VALID_KEY.match(key) or ".." in key:
        raise ValueError(f"invalid storage key {key!r}")
    return key


# --- the local folder and its signed links -----------------------------------------------

FILES_ROUTE = "/v1/files/"
#: Kept results (what a customer ordered) live under this key prefix, which no sweep
#: touches; on GCS, where the lifecycle rule sweeps, in a place of their own.
KEPT_PREFIX = "kept"


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

    def delete(self, key: str) -> None:
        self.path_of(key).unlink(missing_ok=True)

    def delete_older_than(self, max_age_s: float, now: float | None = None) -> int:
        """Delete every object last written more than `max_age_s` ago (and emptied
        folders), kept results apart; return how many. Rewriting an object renews it."""
        cutoff = (time.time() if now is None else now) - max_age_s
        deleted = 0
        kept = self.root / KEPT_PREFIX
        for path in sorted(self.root.rglob("*"), reverse=True):
            if path == kept or kept in path.parents:
                continue
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


def link_signature(link_key: str, key: str, expires_at: int) -> str:
    message = f"{key}\n{expires_at}".encode()
    return hmac.new(link_key.encode(), message, hashlib.sha256).hexdigest()


def verify_link(
    link_key: str,
    key: str,
    expires: str,
    signature: str,
    max_ttl_s: int,
    now: float | None = None,
) -> None:
    """Raise Forbidden unless the signature matches, the link has not expired, and it
    does not live longer than links may (max_ttl_s from now)."""
    try:
        expires_at = int(expires)
    except ValueError:
        raise Forbidden("the link's expiry is malformed") from None
    expected = link_signature(link_key, key, expires_at)
    # Bytes, so that a non-ASCII signature is a mismatch and not a TypeError.
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "surrogatepass")):
        raise Forbidden("the link's signature does not match")
    current = time.time() if now is None else now
    if current > expires_at:
        raise Forbidden("the link has expired")
    if expires_at - current > max_ttl_s:
        raise Forbidden("the link claims a longer life than links are given")


# --- retries -------------------------------------------------------------------------------

FIRST_WAIT_S = 0.5
MAX_WAIT_S = 8.0


#: Told of every storage call that raised: its operation and the error.
StorageErrorSeen = Callable[[str, BaseException], None]


class RetryingStorage(Storage):
    def __init__(
        self, inner: Storage, budget_s: float, on_error: StorageErrorSeen | None = None
    ) -> None:
        self.inner = inner
        self.budget_s = budget_s
        self.on_error = on_error

    def _retrying(self, operation: str, call: Callable[[], T]) -> T:
        retrying = Retrying(
            retry=retry_if_exception_type(TransientStorageError),
            wait=wait_exponential_jitter(multiplier=FIRST_WAIT_S, max=MAX_WAIT_S),
            stop=stop_after_delay(self.budget_s),
            before_sleep=before_sleep_log(logger, logging.WARNING),
            reraise=True,
        )
        return retrying(self._reported(operation, call))

    def _reported(self, operation: str, call: Callable[[], T]) -> Callable[[], T]:
        """`call`, its errors told to `on_error` (each attempt's: an operator sees a
        backend that fails even when a retry saves the call). A missing object is an
        answer, not a storage error."""

        def attempt() -> T:
            try:
                return call()
            except ObjectNotFound:
                raise
            except Exception as exc:
                if self.on_error is not None:
                    self.on_error(operation, exc)
                raise

        return attempt

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self._retrying("put", lambda: self.inner.put(key, data, content_type))

    def get(self, key: str) -> bytes:
        return self._retrying("get", lambda: self.inner.get(key))

    def exists(self, key: str) -> bool:
        return self._retrying("exists", lambda: self.inner.exists(key))

    def delete(self, key: str) -> None:
        self._retrying("delete", lambda: self.inner.delete(key))

    def signed_url(self, key: str, ttl_s: int) -> SignedUrl:
        return self.inner.signed_url(key, ttl_s)

    def unwrapped(self) -> Storage:
        return self.inner.unwrapped()

    def __getattr__(self, name: str) -> object:
        # A backend's own extras (LocalStorage.path_of) stay reachable through the wrapper.
        return getattr(self.inner, name)


# --- the backend the settings name -----------------------------------------------------------


def storage_from_settings(settings: Settings, on_error: StorageErrorSeen | None = None) -> Storage:
    """The backend the settings name, its calls retried within CUTFX_STORAGE_RETRY_S and
    their errors told to `on_error`."""
    return RetryingStorage(_backend(settings), settings.storage_retry_s, on_error)


def kept_storage_from_settings(
    settings: Settings, results: Storage, on_error: StorageErrorSeen | None = None
) -> Storage:
    """Where kept results go: locally the results' own folder (under KEPT_PREFIX, which the
    sweep skips); on GCS a bucket or prefix the lifecycle rule does not reach."""
    if settings.storage != "gcs":
        return results
    from shared.gcs import GcsStorage

    return RetryingStorage(GcsStorage.for_kept(settings), settings.storage_retry_s, on_error)


def _backend(settings: Settings) -> Storage:
    if settings.storage == "gcs":
        from shared.gcs import GcsStorage

        return GcsStorage.from_settings(settings)
    link_key = derive_key(settings.signing_key, Purpose.FILE_LINKS)
    return LocalStorage(settings.local_storage_dir, link_key, settings.public_base_url)
