"""GET /v1/webhooks/secret: the secret that signs this API key's webhook deliveries."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from api.auth import key_id
from api.services import services
from shared.webhooks import SIGNATURE_HEADER, WEBHOOK_EVENT_TYPES, webhook_secret

blueprint = Blueprint("webhooks", __name__, url_prefix="/v1/webhooks")


@blueprint.get("/secret")
def secret() -> dict[str, Any]:
    svc = services()
    return {
        "secret": webhook_secret(svc.settings.signing_key, key_id()),
        "signature_header": SIGNATURE_HEADER,
        "signature_format": "t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.<raw body>'>",
        "event_types": list(WEBHOOK_EVENT_TYPES),
    }
