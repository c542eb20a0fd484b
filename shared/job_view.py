"""A result as clients see it: small JSON with a fresh signed URL, never image bytes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urljoin

from shared.job import RESULT_SUCCEEDED, ResultRecord
from shared.storage import Storage


def result_view(
    result: ResultRecord, storage: Storage, url_ttl_s: int, url_base: str = ""
) -> dict[str, Any]:
    """url_base makes relative (local-storage) links absolute; GCS URLs are left as they are."""
    shown: dict[str, Any] = {"status": result.status, "cached": result.cached}
    if result.status == RESULT_SUCCEEDED and result.key:
        signed = storage.signed_url(result.key, url_ttl_s)
        shown.update(
            url=urljoin(url_base, signed.url) if url_base else signed.url,
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


def event_view(
    data: Mapping[str, Any], storage: Storage, url_ttl_s: int, url_base: str = ""
) -> dict[str, Any]:
    """An event's data as sent: a result event's stored record becomes its view, freshly signed."""
    shown = dict(data)
    if "result" in shown:
        record = ResultRecord(**shown["result"])
        shown["result"] = result_view(record, storage, url_ttl_s, url_base)
    return shown
