"""The headless Chromium the browser tests drive (Debian's package, through Playwright), and
the production settings the security tests start from."""

from __future__ import annotations

import shutil

import pytest

from tests.api.keys import KEY_A, KEY_B, STRONG_SIGNING_KEY

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without these, Chromium tries Google's hosts at start and the closed network refuses it.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which("chromium"):
        pytest.fail("Debian's chromium is not installed: run scripts/ensure-chromium.sh")
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def production(settings):
    """Production settings as an operator sets them: two keys, a strong signing key."""
    return settings.with_overrides(
        env="production",
        api_keys=(KEY_A, KEY_B),
        signing_key=STRONG_SIGNING_KEY,
        webhook_allow_loopback=False,
        metrics_token="scrape-token",
    )
