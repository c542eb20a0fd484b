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


def test_background_crop_and_size_restyle_the_photo_after_upload(browser, e2e_server):
    from tests.helpers import sample_variant

    photo = sample_variant()
    page = browser.new_page()
    page.goto(e2e_server.url + "/")
    page.wait_for_selector("#primary option[value=popart]", state="attached")
    page.set_input_files(
        "#file", files=[{"name": "pet.png", "mimeType": "image/png", "buffer": photo}]
    )
    page.wait_for_selector('body[data-run="1"][data-job=succeeded]', timeout=120_000)
    plain = page.locator('[data-result="cutout"] img')
    assert plain.evaluate("img => img.naturalWidth") == 451
    assert plain.evaluate(MIN_ALPHA) < 255, "the plain cutout is transparent somewhere"

    page.fill("#background", "#ff0000")
    page.check("#background-on")
    page.check("#crop")
    page.select_option("#size", "200")
    last_run = page.evaluate("document.body.dataset.run")
    page.wait_for_selector(f'body[data-run="{last_run}"][data-job=succeeded]', timeout=60_000)

    for name in RESULTS:
        shown = page.locator(f'[data-result="{name}"] img')
        width, height = shown.evaluate("img => [img.naturalWidth, img.naturalHeight]")
        assert max(width, height) <= 200, name
        assert shown.evaluate(MIN_ALPHA) == 255, f"{name} is on an opaque background"
    assert "cached" in page.locator('[data-result="cutout"] .info').inner_text()
    page.close()
