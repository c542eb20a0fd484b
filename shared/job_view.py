"""A result as clients see it: small JSON with a fresh signed URL, never image bytes."""

from __future__ import annotations

from typing import Any

from shared.job import RESULT_SUCCEEDED, ResultRecord
from shared.storage import Storage


def result_view(result: ResultRecord, storage: Storage, url_ttl_s: int) -> dict[str, Any]:
    shown: dict[str, Any] = {"status": result.status, "cached": result.cached}
    if result.status == RESULT_SUCCEEDED and result.key:
        signed = storage.signed_url(result.key, url_ttl_s)
        shown.update(
            url=signed.url,
            url_expires_at=signed.expires_at,
            content_type=result.content_type,
            bytes=result.byte_size,
            width=result.width,
            height=result.height,
        )
    if result.error:
        shown["error"] = result.error
    shown["timings"] = result.timings
    return shown
