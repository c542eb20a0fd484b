"""Where inputs and results live: one interface, a local-folder and a GCS backend."""

from shared.storage.base import SignedUrl, Storage
from shared.storage.factory import storage_from_settings

__all__ = ["SignedUrl", "Storage", "storage_from_settings"]
