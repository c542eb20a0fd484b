from __future__ import annotations

import re

from effects import EFFECT_NAMES


def test_effects_lists_the_registry_with_parameters(client):
    effects = {e["name"]: e for e in client.get("/v1/effects").get_json()["effects"]}
    assert set(EFFECT_NAMES) <= set(effects)
    assert effects["dithering"]["params"]["pixel_spacing"] == {
        "type": "integer",
        "default": 2,
        "minimum": 1,
        "maximum": 5,
        "description": "Grid step between dots.",
    }


def test_openapi_documents_every_route_and_only_those(app, client):
    document = client.get("/v1/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    documented = {
        (path, method.upper()) for path, item in document["paths"].items() for method in item
    }
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.rule == "/":
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        served |= {(path, method) for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert documented == served


def test_healthz_is_always_ok(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_readyz_is_503_without_workers(client):
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "gpu" in response.get_json()["error"]["message"]
