"""The web page in a real headless Chromium, through the real API and workers."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

RESULTS = ["cutout", "color", "enhancedblackwhite", "popart", "dithering"]


def is_event_stream(url: str) -> bool:
    # The page closes its EventSource after job.finished; Chromium reports that close.
    return url.endswith("/events")


def record_console_error(errors: list[str], message) -> None:
    if message.type == "error" and not is_event_stream(message.location.get("url", "")):
        errors.append(message.text)


def record_failed_request(errors: list[str], request) -> None:
    if not is_event_stream(request.url):
        errors.append(f"{request.url} {request.failure}")


@pytest.mark.parametrize(("device", "viewport"), [("phone", (390, 844)), ("desktop", (1200, 900))])
def test_upload_shows_every_result_as_it_arrives(
    browser, e2e_server, artifacts_dir, device, viewport
):
    from tests.helpers import SAMPLE

    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    console_errors: list[str] = []
    page.on("console", lambda m: record_console_error(console_errors, m))
    page.on("requestfailed", lambda r: record_failed_request(console_errors, r))
    page.goto(e2e_server.url + "/")
    page.wait_for_selector("#primary option[value=popart]", state="attached")
    page.select_option("#primary", "popart")
    page.set_input_files("#file", str(SAMPLE))
    page.wait_for_selector("body[data-job=succeeded]", timeout=120_000)
    for name in RESULTS:
        card = page.locator(f'[data-result="{name}"]')
        assert card.get_attribute("class") == "card done loaded" or card.evaluate(
            "c => c.classList.contains('done') && c.querySelector('img').complete"
        )
        width = card.locator("img").evaluate("img => img.naturalWidth")
        assert width == 451, f"{name} image did not load"
        assert card.locator("a.download").get_attribute("href")
    assert page.locator("#status-text").inner_text() == "All done"
    assert not console_errors, console_errors
    page.screenshot(path=str(artifacts_dir / f"page-{device}.png"), full_page=True)
    page.close()


def test_a_bad_upload_shows_the_error(browser, e2e_server, tmp_path):
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("hello")
    page = browser.new_page()
    page.goto(e2e_server.url + "/")
    page.set_input_files("#file", str(not_an_image))
    page.wait_for_selector("#error:not([hidden])")
    assert "not an image" in page.locator("#error").inner_text()
    page.close()


MIN_ALPHA = """img => {
    const canvas = document.createElement("canvas");
    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
    const context = canvas.getContext("2d");
    context.drawImage(img, 0, 0);
    const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
    let lowest = 255;
    for (let i = 3; i < data.length; i += 4) lowest = Math.min(lowest, data[i]);
    return lowest;
}"""


def open_page_with_a_finished_upload(browser, e2e_server):
    from tests.helpers import sample_variant

    page = browser.new_page()
    page.goto(e2e_server.url + "/")
    page.wait_for_selector("#primary option[value=popart]", state="attached")
    page.set_input_files(
        "#file", files=[{"name": "pet.png", "mimeType": "image/png", "buffer": sample_variant()}]
    )
    page.wait_for_selector('body[data-run="1"][data-job=succeeded]', timeout=120_000)
    return page


def shown_longest_sides(page) -> dict[str, int]:
    sides = {}
    for name in RESULTS:
        shown = page.locator(f'[data-result="{name}"] img')
        sides[name] = max(shown.evaluate("img => [img.naturalWidth, img.naturalHeight]"))
    return sides


def test_background_crop_and_size_restyle_the_photo_after_upload(browser, e2e_server):
    page = open_page_with_a_finished_upload(browser, e2e_server)
    plain = page.locator('[data-result="cutout"] img')
    assert plain.evaluate("img => img.naturalWidth") == 451
    assert plain.evaluate(MIN_ALPHA) < 255, "the plain cutout is transparent somewhere"

    page.fill("#background", "#ff0000")
    page.check("#background-on")
    page.check("#crop")
    page.select_option("#size", "200")
    last_run = page.evaluate("document.body.dataset.run")
    page.wait_for_selector(f'body[data-run="{last_run}"][data-job=succeeded]', timeout=60_000)

    sides = shown_longest_sides(page)
    assert max(sides.values()) <= 200, sides
    for name in RESULTS:
        shown = page.locator(f'[data-result="{name}"] img')
        assert shown.evaluate(MIN_ALPHA) == 255, f"{name} is on an opaque background"
    assert "cached" in page.locator('[data-result="cutout"] .info').inner_text()
    page.close()


def test_a_restyle_answered_late_never_replaces_a_newer_one(browser, e2e_server):
    """Two option changes in a row: the first one's submit answers only after the second job
    has finished. The page must keep the second's results and cancel the first job."""
    page = open_page_with_a_finished_upload(browser, e2e_server)
    submits: list[object] = []
    held = []

    def hold_the_first_restyle(route):
        if route.request.method != "POST":
            route.continue_()
            return
        submits.append(route)
        if len(submits) == 1:
            # The job is queued and runs; only the page's answer is late.
            held.append((route, route.fetch()))
        else:
            route.continue_()

    page.route("**/v1/jobs", hold_the_first_restyle)
    page.check("#background-on")
    page.select_option("#size", "200")
    page.wait_for_selector('body[data-run="3"][data-job=succeeded]', timeout=60_000)
    assert len(submits) == 2, "the two restyles were not both submitted"
    assert len(held) == 1, "the first restyle's submit was not held"
    newest = shown_longest_sides(page)
    assert max(newest.values()) <= 200, newest

    route, answer = held[0]
    late_job = answer.json()["id"]
    with page.expect_request(
        lambda request: request.method == "DELETE" and request.url.endswith(late_job),
        timeout=10_000,
    ):
        route.fulfill(response=answer)
    assert page.evaluate("document.body.dataset.job") == "succeeded"
    assert shown_longest_sides(page) == newest
    assert page.locator("#status-text").inner_text() == "All done"
    page.close()


def test_a_photo_without_a_subject_shows_its_check_as_a_notice(browser, e2e_server, tmp_path):
    from tests.worker.test_checks import no_subject_photo

    photo = tmp_path / "empty-sofa.png"
    photo.write_bytes(no_subject_photo())
    page = browser.new_page()
    page.goto(e2e_server.url + "/")
    page.wait_for_selector("#primary option[value=popart]", state="attached")
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("body[data-job=succeeded]", timeout=120_000)
    notice = page.locator('[data-result="cutout"] .notice')
    assert "no_subject" in (notice.get_attribute("data-checks") or "").split()
    assert "No subject was found" in notice.inner_text()
    page.close()
