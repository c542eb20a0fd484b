"""GET /: the web page (plain HTML, CSS and JavaScript); GET /v1/client.js: the JS client."""

from __future__ import annotations

from flask import Blueprint, Response, current_app

blueprint = Blueprint("page", __name__)


@blueprint.get("/")
def index() -> Response:
    return current_app.send_static_file("index.html")


@blueprint.get("/v1/client.js")
def client_module() -> Response:
    """The JavaScript client as an ES module, for pages on any allowed origin."""
    response = current_app.send_static_file("client.js")
    response.mimetype = "text/javascript"
    return response
