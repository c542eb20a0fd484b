"""Storage in a local folder; downloads go through HMAC-signed links served by the API."""

from __future__ import annotations

import mimetypes
import os
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

from shared.errors import ObjectNotFound
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
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a reader never sees half a file.
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as tmp:
                tmp.write(data)
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self.path_of(key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(f"no object {key}") from None

    def exists(self, key: str) -> bool:
        return self.path_of(key).is_file()

    def signed_url(self, key: str, ttl_s: int) -> SignedUrl:
        check_key(key)
        expires_at = int(time.time()) + ttl_s
        query = urlencode(
            {"expires": expires_at, "sig": link_signature(self.link_key, key, expires_at)}
        )
        return SignedUrl(f"{self.public_base_url}{FILES_ROUTE}{key}?{query}", expires_at)


def content_type_of(key: str) -> str:
    return mimetypes.guess_type(key)[0] or "application/octet-stream"
