"""Pick the storage backend that the settings name."""

from __future__ import annotations

from shared.settings import Settings
from shared.signing import Purpose, derive_key
from shared.storage.base import Storage
from shared.storage.local import LocalStorage
from shared.storage.retrying import RetryingStorage


def storage_from_settings(settings: Settings) -> Storage:
    """The backend the settings name, its calls retried within CUTFX_STORAGE_RETRY_S."""
    return RetryingStorage(_backend(settings), settings.storage_retry_s)


def _backend(settings: Settings) -> Storage:
    if settings.storage == "gcs":
        from shared.storage.gcs import GcsStorage

        return GcsStorage.from_settings(settings)
    link_key = derive_key(settings.signing_key, Purpose.FILE_LINKS)
    return LocalStorage(settings.local_storage_dir, link_key, settings.public_base_url)
