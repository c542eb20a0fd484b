"""GET /: the demo web page (plain HTML, CSS and JavaScript)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app

blueprint = Blueprint("page", __name__)


@blueprint.get("/")
def index() -> Response:
    return current_app.send_static_file("index.html")
