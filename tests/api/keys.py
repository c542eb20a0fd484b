"""Two tenants' API keys and the requests they send, for the security-minded API tests."""

from __future__ import annotations

import io

from tests.helpers import image_bytes

KEY_A = "sk_live_tenant_a_0123456789"
KEY_B = "sk_live_tenant_b_9876543210"
STRONG_SIGNING_KEY = "f" * 64


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def keyed_submit(client, key: str, data: bytes | None = None, headers=None, **form: str):
    payload = {"image": (io.BytesIO(data or image_bytes()), "a.png"), **form}
    return client.post(
        "/v1/jobs",
        data=payload,
        content_type="multipart/form-data",
        headers={**bearer(key), **(headers or {})},
    )
