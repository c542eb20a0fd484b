"""GET /v1/effects and GET /v1/openapi.json."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from api.openapi import openapi_document
from effects import list_effects

blueprint = Blueprint("catalog", __name__, url_prefix="/v1")


@blueprint.get("/effects")
def effects() -> dict[str, Any]:
    return {"effects": [effect.schema() for effect in list_effects()]}


@blueprint.get("/openapi.json")
def openapi() -> dict[str, Any]:
    return openapi_document()
