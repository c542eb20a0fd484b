"""Files and the page: GET /v1/files/<key> (downloads behind HMAC-signed, expiring links,
local storage) and GET / with the JavaScript client (the web page and its module)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request, send_file

from api.middleware import services
from shared.errors import Forbidden, NotFound, ObjectNotFound
from shared.signing import Purpose, derive_key
from shared.storage import LocalStorage, content_type_of, verify_link

blueprint = Blueprint("files", __name__, url_prefix="/v1/files")

#: Objects are content-addressed: a key's bytes never change.
IMMUTABLE_CACHE = "private, max-age=31536000, immutable"


@blueprint.get("/<path:key>")
def download(key: str) -> Response:
    svc = services()
    local = svc.storage.unwrapped()
    if not isinstance(local, LocalStorage):
        raise NotFound("downloads are served by the storage backend's own signed URLs")
    expires, signature = request.args.get("expires"), request.args.get("sig")
    if not expires or not signature:
        raise Forbidden("the link is not signed")
    link_key = derive_key(svc.settings.signing_key, Purpose.FILE_LINKS)
    verify_link(link_key, key, expires, signature, max_ttl_s=svc.settings.url_ttl_s)
    path = local.path_of(key)
    if not path.is_file():
        raise ObjectNotFound(f"no object {key}")
    response = send_file(path, mimetype=content_type_of(key), conditional=True, etag=True)
    response.headers["Cache-Control"] = IMMUTABLE_CACHE
    return response


# GET /: the web page (plain HTML, CSS and JavaScript); GET /v1/client.js: the JS client.

page_blueprint = Blueprint("page", __name__)


@page_blueprint.get("/")
def index() -> Response:
    return current_app.send_static_file("index.html")


@page_blueprint.get("/v1/client.js")
def client_module() -> Response:
    """The JavaScript client as an ES module, for pages on any allowed origin."""
    response = current_app.send_static_file("client.js")
    response.mimetype = "text/javascript"
    return response
