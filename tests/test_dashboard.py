"""The dashboard (SPEC "Dashboard") in headless Chromium, against the real service.

It draws its panels from the query API with an app ID and read key, shows the
number of calls of the range, and shows the API's error message for a wrong key.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from apinalytics.apps import NewApp

from .helpers import event, write_headers

CHROMIUM = Path("/usr/bin/chromium")
PANELS = (
    "calls-by-consumer",
    "calls-by-function",
    "latency-by-function",
    "status-codes",
    "errors",
    "total-time",
)

pytestmark = pytest.mark.browser


@pytest.fixture
async def page() -> AsyncIterator[object]:
    if not CHROMIUM.exists():
        pytest.skip(
            "Debian's chromium package is not installed (/usr/bin/chromium missing); "
            "scripts/install-system installs it"
        )
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
            ],
        )
        try:
            yield await browser.new_page()
        finally:
            await browser.close()


async def test_dashboard_draws_every_panel(
    client: TestClient, app_keys: NewApp, page: object
) -> None:
    now = time.time()
    events = [
        event(timestamp=now - 600, consumer_id="acme", function="list", status_code=200),
        event(timestamp=now - 500, consumer_id="acme", function="get", status_code=404),
        event(timestamp=now - 400, consumer_id="zeta", function="get", status_code=503),
    ]
    resp = await client.post("/1/events/", json=events, headers=write_headers(app_keys))
    assert resp.status == 200

    url = client.make_url("/dashboard/").with_query(
        app=app_keys.app_id, key=app_keys.read_key or "", range="3600"
    )
    await page.goto(str(url))  # type: ignore[attr-defined]
    status = page.locator("#status")  # type: ignore[attr-defined]
    await status.filter(has_text="3 calls").wait_for(timeout=15_000)
    for panel in PANELS:
        assert await page.get_attribute(f"#{panel}", "data-ready") == "true", panel  # type: ignore[attr-defined]


async def test_dashboard_shows_the_api_error(
    client: TestClient, app_keys: NewApp, page: object
) -> None:
    url = client.make_url("/dashboard/").with_query(app=app_keys.app_id, key="apr_wrong")
    await page.goto(str(url))  # type: ignore[attr-defined]
    status = page.locator("#status.error")  # type: ignore[attr-defined]
    await status.wait_for(timeout=15_000)
    assert "wrong key" in await status.inner_text()
