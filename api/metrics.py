"""GET /metrics: Prometheus text, the same from every API process (the figures live in Redis)."""

from __future__ import annotations

from flask import Blueprint, Response

from api.services import services
from shared.metrics import ALL_METRICS, render

blueprint = Blueprint("metrics", __name__)

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


@blueprint.get("/metrics")
def metrics() -> Response:
    return Response(render(services().redis, ALL_METRICS), mimetype=PROMETHEUS_TEXT)
