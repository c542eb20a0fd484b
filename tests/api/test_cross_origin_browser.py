"""A shop's page on another origin uses cutfx in a real headless Chromium.

Three servers on loopback ports: the API (real workers behind it), a test "shop" that
serves its page and trades its secret key for client tokens server-side, and a page on an
origin no key allows. Chromium runs the shop page's script, which loads /v1/client.js from
the API, gets a token from the shop, submits, follows every event, downloads a result and
cancels a second job; leaving the page cancels a third. The other origin is blocked.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask, Response, jsonify

from api import create_app
from api.middleware import key_id_of
from tests.conftest import LiveServer
from tests.helpers import SAMPLE
from tests.worker.test_checks import no_subject_photo

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

SHOP_KEY = "sk_shop_cross_origin_0123456789"
STEPS_FILE = "cross-origin-steps.json"

SHOP_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>A pet shop</title></head>
<body><h1>Your pet, styled</h1><div id="results"></div>
<script type="module">
const API = "__API__";
window.runShop = async () => {
  const steps = [];
  const { createClient, showResults } = await import(API + "/v1/client.js");
  steps.push({ step: "load client.js", ok: true });
  const issued = await (await fetch("/token", { method: "POST" })).json();
  steps.push({ step: "token from the shop's server", token_id: issued.token_id,
               origin: issued.origin });
  const cutfx = createClient({ baseUrl: API, credential: issued.token });
  const photo = await (await fetch("/pet.png")).blob();
  const job = await cutfx.submit(photo, { effects: ["color", "popart"], primary: "popart" });
  steps.push({ step: "submit", status: job.status, id: job.id });
  const events = [];
  const status = await showResults(job, document.getElementById("results"),
                                   { onEvent: (event) => events.push(event.type) });
  steps.push({ step: "events", events, status });
  const shown = document.querySelector('[data-result="popart"] img');
  const download = await fetch(shown.src);
  const bytes = (await download.arrayBuffer()).byteLength;
  steps.push({ step: "download popart", status: download.status,
               content_type: download.headers.get("content-type"), bytes,
               width: shown.naturalWidth });
  const byAddress = await cutfx.submit(location.origin + "/pet.png", { effects: ["color"] });
  steps.push({ step: "submit the same photo by address", status: byAddress.status,
               cached: byAddress.finished && byAddress.body.results.color.cached });
  const empty = await (await fetch("/empty.png")).blob();
  const checked = document.createElement("div");
  document.body.append(checked);
  await showResults(await cutfx.submit(empty, { effects: ["color"] }), checked);
  const notice = checked.querySelector('[data-result="cutout"] .cutfx-notice');
  steps.push({ step: "a photo without a subject", checks: notice && notice.dataset.checks,
               message: notice && notice.textContent });
  const second = await cutfx.submit(photo, { effects: ["slow"] });
  const canceled = await second.cancel();
  const secondEvents = [];
  for await (const event of second.events()) secondEvents.push([event.type, event.data.status]);
  steps.push({ step: "cancel a second job", status: canceled.status, events: secondEvents,
               cutout: canceled.results.cutout.status });
  const third = await cutfx.submit(photo, { effects: ["slow"] });
  window.leftBehind = third.id;
  steps.push({ step: "submit a third job, then leave", status: third.status, id: third.id });
  return steps;
};
</script></body></html>
"""

EVIL_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Not allowed</title></head><body>
<script type="module">
const API = "__API__";
window.tryApi = async (token, jobId) => {
  const outcome = async (name, attempt) => {
    try { const answer = await attempt(); return [name, "answered " + answer.status]; }
    catch (error) { return [name, "blocked: " + error.name]; }
  };
  return Promise.all([
    outcome("catalogue", () => fetch(API + "/v1/effects")),
    outcome("read a job with a stolen token", () => fetch(API + "/v1/jobs/" + jobId,
            { headers: { Authorization: "Bearer " + token } })),
    outcome("client.js", () => import(API + "/v1/client.js").then(() => ({ status: 200 }))),
  ]);
};
</script></body></html>
"""


def page_app(
    name: str, html: str, routes: dict[str, Callable[[], Response]] | None = None
) -> Flask:
    """A page whose API address is filled in when it is served (the API starts last)."""
    app = Flask(name)

    def page() -> Response:
        api_url = app.config["API_URL"]
        return Response(html.replace("__API__", api_url), mimetype="text/html")

    app.add_url_rule("/", "page", page)
    for rule, view in (routes or {}).items():
        app.add_url_rule(rule, rule, view, methods=["GET", "POST"])
    return app


@pytest.fixture
def origins(workers, e2e_settings):
    """The shop, the API that allows it, and a page on an origin nobody allows."""
    where: dict[str, str] = {}

    def token() -> Response:
        # The shop's server: its secret key never leaves it.
        answer = requests.post(
            f"{where['api']}/v1/client-tokens",
            json={"origin": where["shop"], "ttl_s": 300, "max_jobs": 6},
            headers={"Authorization": f"Bearer {SHOP_KEY}"},
            timeout=10,
        )
        return jsonify(answer.json())

    def pet() -> Response:
        return Response(Path(SAMPLE).read_bytes(), mimetype="image/png")

    def empty() -> Response:
        return Response(no_subject_photo(), mimetype="image/png")

    shop_app = page_app("shop", SHOP_PAGE, {"/token": token, "/pet.png": pet, "/empty.png": empty})
    evil_app = page_app("evil", EVIL_PAGE)
    with LiveServer(shop_app) as shop, LiveServer(evil_app) as evil:
        settings = e2e_settings.with_overrides(
            api_keys=(SHOP_KEY,),
            key_origins={key_id_of(SHOP_KEY): (shop.url,)},
            # The shop's photos are on loopback here, as its CDN would be on the internet.
            fetch_allow_loopback=True,
        )
        with LiveServer(create_app({"TESTING": True, "CUTFX_SETTINGS": settings})) as api:
            where.update(api=api.url, shop=shop.url)
            shop_app.config["API_URL"] = evil_app.config["API_URL"] = api.url
            yield api, shop, evil


def job_as_shop(api_url: str, job_id: str) -> dict[str, Any]:
    return requests.get(
        f"{api_url}/v1/jobs/{job_id}",
        headers={"Authorization": f"Bearer {SHOP_KEY}"},
        timeout=10,
    ).json()


def test_a_shop_page_on_another_origin_runs_a_job_end_to_end(browser, origins, artifacts_dir):
    api, shop, evil = origins
    page = browser.new_page()
    page.goto(shop.url + "/")
    steps = page.evaluate("runShop()")
    (artifacts_dir / STEPS_FILE).write_text(json.dumps(steps, indent=2))
    by_step = {entry["step"]: entry for entry in steps}

    assert by_step["token from the shop's server"]["token_id"].startswith("tok_")
    assert by_step["submit"]["status"] == "queued"
    events = by_step["events"]
    assert events["status"] == "succeeded"
    assert events["events"][0] == "job.accepted"
    assert events["events"][-1] == "job.finished"
    assert events["events"].count("result.succeeded") == 3
    download = by_step["download popart"]
    assert download["status"] == 200
    assert download["content_type"] == "image/webp"
    assert download["bytes"] > 1000
    assert download["width"] == 451
    by_address = by_step["submit the same photo by address"]
    assert by_address == {
        "step": "submit the same photo by address",
        "status": "succeeded",
        "cached": True,
    }, "the shop's photo by its address is the uploaded one: answered from the cache"
    checked = by_step["a photo without a subject"]
    assert "no_subject" in checked["checks"].split(), "showResults shows the checks"
    assert "No subject was found" in checked["message"]
    second = by_step["cancel a second job"]
    assert second["status"] == "canceled"
    assert second["events"][-1] == ["job.finished", "canceled"]
    assert ["result.canceled", None] in second["events"]
    assert second["cutout"] in ("succeeded", "canceled")

    left_behind = by_step["submit a third job, then leave"]["id"]
    page.goto(evil.url + "/")
    deadline = time.monotonic() + 20
    while job_as_shop(api.url, left_behind)["status"] != "canceled":
        assert time.monotonic() < deadline, "leaving the page did not cancel the job"
        time.sleep(0.2)

    token = requests.post(
        f"{api.url}/v1/client-tokens",
        json={"origin": shop.url},
        headers={"Authorization": f"Bearer {SHOP_KEY}"},
        timeout=10,
    ).json()["token"]
    blocked = dict(page.evaluate("([t, j]) => tryApi(t, j)", [token, left_behind]))
    (artifacts_dir / "cross-origin-blocked.json").write_text(json.dumps(blocked, indent=2))
    assert blocked == {
        "catalogue": "blocked: TypeError",
        "read a job with a stolen token": "blocked: TypeError",
        "client.js": "blocked: TypeError",
    }
    page.close()
