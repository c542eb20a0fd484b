"""Google Cloud Storage, through the official client; downloads are v4 signed URLs.

Signing needs a private key. With a service-account key file the process signs
locally; on Cloud Run or GKE, whose default credentials hold no key, it signs
through IAM's signBlob (the service account's email plus an access token; the
account needs roles/iam.serviceAccountTokenCreator on itself).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from shared.errors import (
    BucketNotAllowed,
    ConfigurationError,
    FetchFailed,
    FetchTooLarge,
    InvalidParameter,
    ObjectNotFound,
    StorageError,
    TransientStorageError,
)
from shared.outbound import PHOTO_FIELD
from shared.settings import Settings
from shared.storage import KEPT_PREFIX, SignedUrl, Storage, check_key

#: Content-addressed objects never change: clients and CDNs may keep them for a year.
IMMUTABLE_CACHE_CONTROL = "private, max-age=31536000, immutable"
#: (connect, read) seconds for one HTTP call to GCS.
TIMEOUT_S = (10, 60)
#: How long transient errors (429, 5xx, resets) are retried, with backoff, before giving up.
RETRY_DEADLINE_S = 60.0
SCOPES = ("https://www.googleapis.com/auth/devstorage.read_write",)
EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
#: Refresh an IAM access token this long before it expires.
TOKEN_MARGIN_S = 300


class UrlSigner:
    """What generate_signed_url needs to sign: a key, or an email and a token for IAM."""

    def signing_arguments(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass
class KeySigner(UrlSigner):
    credentials: Any

    def signing_arguments(self) -> dict[str, Any]:
        return {"credentials": self.credentials}


class IamSigner(UrlSigner):
    def __init__(self, credentials: Any, email: str, refresh: Callable[[Any], None]) -> None:
        self.credentials = credentials
        self.email = email
        self._refresh = refresh
        self._lock = threading.Lock()

    def signing_arguments(self) -> dict[str, Any]:
        with self._lock:
            expiry = getattr(self.credentials, "expiry", None)
            stale = expiry is None or expiry.timestamp() - time.time() < TOKEN_MARGIN_S
            if not self.credentials.token or stale:
                self._refresh(self.credentials)
            return {"service_account_email": self.email, "access_token": self.credentials.token}


def choose_signer(credentials: Any, signer_email: str, refresh: Callable[[Any], None]) -> UrlSigner:
    """A local key when the credentials hold one, else IAM signBlob, else a clear error."""
    if getattr(credentials, "signer", None) is not None and hasattr(credentials, "signer_email"):
        return KeySigner(credentials)
    email = signer_email or getattr(credentials, "service_account_email", "") or ""
    if email and email != "default":
        return IamSigner(credentials, email, refresh)
    raise ConfigurationError(
        "cannot sign GCS URLs: the credentials hold no private key and no service account "
        "email is known; set GOOGLE_APPLICATION_CREDENTIALS to a key file or CUTFX_GCS_SIGNER_EMAIL"
    )


class GcsStorage(Storage):
    def __init__(
        self,
        bucket: Any,
        prefix: str,
        signer: UrlSigner,
        url_endpoint: str | None,
        storage_class: str = "",
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.signer = signer
        self.url_endpoint = url_endpoint
        self.storage_class = storage_class

    @classmethod
    def from_settings(cls, settings: Settings) -> GcsStorage:
        return cls._on(settings, settings.gcs_bucket, settings.gcs_prefix)

    @classmethod
    def for_kept(cls, settings: Settings) -> GcsStorage:
        """Kept results: CUTFX_KEEP_BUCKET, or beside the results' prefix in their bucket
        (the lifecycle rule deletes under "<prefix>/" only), in CUTFX_KEEP_STORAGE_CLASS."""
        if settings.keep_bucket:
            bucket, prefix = settings.keep_bucket, settings.gcs_prefix
        else:
            bucket = settings.gcs_bucket
            prefix = (
                f"{settings.gcs_prefix.strip('/')}-{KEPT_PREFIX}" if settings.gcs_prefix else ""
            )
        return cls._on(settings, bucket, prefix, settings.keep_storage_class)

    @classmethod
    def _on(
        cls, settings: Settings, bucket: str, prefix: str, storage_class: str = ""
    ) -> GcsStorage:
        from google.auth.transport.requests import Request

        client, credentials = _client()
        signer = choose_signer(
            credentials, settings.gcs_signer_email, lambda c: c.refresh(Request())
        )
        emulator = os.environ.get(EMULATOR_ENV)
        return cls(client.bucket(bucket), prefix, signer, emulator, storage_class)

    def object_name(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes, content_type: str) -> None:
        blob = self.bucket.blob(self.object_name(key))
        blob.cache_control = IMMUTABLE_CACHE_CONTROL
        if self.storage_class:
            blob.storage_class = self.storage_class
        with _mapped_errors(key):
            blob.upload_from_string(
                data, content_type=content_type, timeout=TIMEOUT_S, retry=_retry()
            )

    def get(self, key: str) -> bytes:
        blob = self.bucket.blob(self.object_name(key))
        with _mapped_errors(key):
            data: bytes = blob.download_as_bytes(timeout=TIMEOUT_S, retry=_retry())
            return data

    def exists(self, key: str) -> bool:
        blob = self.bucket.blob(self.object_name(key))
        with _mapped_errors(key):
            return bool(blob.exists(timeout=TIMEOUT_S, retry=_retry()))

    def delete(self, key: str) -> None:
        blob = self.bucket.blob(self.object_name(key))
        with contextlib.suppress(ObjectNotFound), _mapped_errors(key):
            blob.delete(timeout=TIMEOUT_S, retry=_retry())

    def signed_url(self, key: str, ttl_s: int) -> SignedUrl:
        blob = self.bucket.blob(self.object_name(key))
        expires_at = int(time.time()) + ttl_s
        extra: dict[str, Any] = (
            {"api_access_endpoint": self.url_endpoint} if self.url_endpoint else {}
        )
        url = blob.generate_signed_url(
            version="v4",
            expiration=datetime.timedelta(seconds=ttl_s),
            method="GET",
            **extra,
            **self.signer.signing_arguments(),
        )
        return SignedUrl(url, expires_at)


def set_lifecycle(bucket: Any, prefix: str, result_ttl_s: int) -> int:
    """Delete objects under the prefix once they are older than the result TTL (in whole days)."""
    days = max(1, -(-result_ttl_s // 86400))
    bucket.reload(timeout=TIMEOUT_S)
    bucket.add_lifecycle_delete_rule(age=days, matches_prefix=[f"{prefix.strip('/')}/"])
    bucket.patch(timeout=TIMEOUT_S)
    return days


#: How long a browser may reuse the bucket's answer to a preflight.
CORS_MAX_AGE_S = 3600


def set_cors(bucket: Any, origins: list[str]) -> list[dict[str, Any]]:
    """Let pages on `origins` read signed downloads with fetch (an <img> needs no CORS)."""
    bucket.reload(timeout=TIMEOUT_S)
    bucket.cors = [
        {
            "origin": sorted(origins),
            "method": ["GET", "HEAD"],
            "responseHeader": ["Content-Type", "Content-Length"],
            "maxAgeSeconds": CORS_MAX_AGE_S,
        }
    ]
    bucket.patch(timeout=TIMEOUT_S)
    rules: list[dict[str, Any]] = bucket.cors
    return rules


def _client() -> tuple[Any, Any]:
    """A storage client on the service's own credentials (the emulator's, when set), and
    those credentials, which sign."""
    import google.auth
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    credentials, project = google.auth.default(scopes=SCOPES)
    # The emulator takes no tokens; the real credentials still sign, locally.
    emulator = os.environ.get(EMULATOR_ENV)
    client_credentials = AnonymousCredentials() if emulator else credentials  # type: ignore[no-untyped-call]
    return storage.Client(project=project or "cutfx", credentials=client_credentials), credentials


# --- photos by bucket object: image_url=gs://bucket/path --------------------------------

GS_SCHEME = "gs://"


def is_gs_url(url: str) -> bool:
    return url.startswith(GS_SCHEME)


def parse_gs_url(url: str) -> tuple[str, str]:
    """(bucket, object name) of gs://bucket/path; InvalidParameter when it names neither."""
    bucket, _, name = url.removeprefix(GS_SCHEME).partition("/")
    if not bucket or not name:
        raise InvalidParameter("a gs:// image_url is gs://bucket/path/to/photo", PHOTO_FIELD)
    return bucket, name


def read_photo_object(url: str, allowed_buckets: tuple[str, ...], max_bytes: int) -> bytes:
    """The bytes of gs://bucket/path, read with the service's own credentials, from a bucket
    CUTFX_INPUT_BUCKETS lists (BucketNotAllowed otherwise, before any request)."""
    bucket_name, name = parse_gs_url(url)
    if bucket_name not in allowed_buckets:
        raise BucketNotAllowed(
            f"this service does not read photos from the bucket {bucket_name!r}", PHOTO_FIELD
        )
    bucket = _photo_client().bucket(bucket_name)
    try:
        with _mapped_errors(f"{bucket_name}/{name}"):
            blob = bucket.get_blob(name, timeout=TIMEOUT_S, retry=_retry())
            if blob is None:
                raise FetchFailed(f"there is no object {url}", PHOTO_FIELD)
            if blob.size is not None and blob.size > max_bytes:
                raise FetchTooLarge(f"{url} is larger than {max_bytes} bytes", PHOTO_FIELD)
            # No further than the cap whatever the size said: the object may have grown.
            data: bytes = blob.download_as_bytes(end=max_bytes, timeout=TIMEOUT_S, retry=_retry())
    except TransientStorageError:
        raise
    except StorageError as exc:
        raise FetchFailed(f"{url} could not be read: {exc.message}", PHOTO_FIELD) from None
    if len(data) > max_bytes:
        raise FetchTooLarge(f"{url} is larger than {max_bytes} bytes", PHOTO_FIELD)
    return data


@functools.cache
def _photo_client() -> Any:
    client, _ = _client()
    return client


def _retry() -> Any:
    from google.cloud.storage.retry import DEFAULT_RETRY

    # DEFAULT_RETRY retries 408, 429, 5xx and connection errors, never other 4xx.
    return DEFAULT_RETRY.with_deadline(RETRY_DEADLINE_S)


@contextmanager
def _mapped_errors(key: str) -> Iterator[None]:
    from google.api_core import exceptions as api
    from google.cloud.storage.retry import _should_retry

    try:
        yield
    except api.NotFound:
        raise ObjectNotFound(f"no object {key}") from None
    except Exception as exc:
        if _should_retry(exc) or isinstance(exc, api.RetryError):
            raise TransientStorageError(f"GCS is unavailable: {type(exc).__name__}") from exc
        if isinstance(exc, api.GoogleAPICallError):
            raise StorageError(f"GCS refused the request: {exc.message}") from exc
        raise
