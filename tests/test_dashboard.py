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
from yarl import URL

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
        event(timestamp=now - 300, consumer_id="", function="", status_code=200),
    ]
    resp = await client.post("/1/events/", json=events, headers=write_headers(app_keys))
    assert resp.status == 200

    url = client.make_url("/dashboard/").with_query(
        app=app_keys.app_id, key=app_keys.read_key or "", range="86400"
    )
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))  # type: ignore[attr-defined]
    await page.goto(str(url))  # type: ignore[attr-defined]
    status = page.locator("#status")  # type: ignore[attr-defined]
    await status.filter(has_text="4 calls").wait_for(timeout=15_000)
    for panel in PANELS:
        assert await page.get_attribute(f"#{panel}", "data-ready") == "true", panel  # type: ignore[attr-defined]
    assert await page.is_hidden("#empty")  # type: ignore[attr-defined]

    # What the charts hold is what was sent; the empty consumer and function are named.
    drawn = await page.evaluate(  # type: ignore[attr-defined]
        """() => Object.fromEntries(["calls-by-consumer", "calls-by-function", "status-codes"]
            .map((id) => { const c = Chart.getChart(id); return [id, {
                labels: c.data.labels,
                sets: c.data.datasets.map((d) => [d.label ?? null, d.data]) }]; }))"""
    )
    per_consumer = {name: sum(data) for name, data in drawn["calls-by-consumer"]["sets"]}
    assert per_consumer == {"(none)": 1, "acme": 2, "zeta": 1}

    def bars(chart: str) -> dict[str, int]:
        return dict(zip(drawn[chart]["labels"], drawn[chart]["sets"][0][1], strict=True))

    assert bars("calls-by-function") == {"get": 2, "list": 1, "(none)": 1}
    assert bars("status-codes") == {"200": 2, "404": 1, "503": 1}

    # The 24-hour range starts on a boundary of its 15-minute bars and ends at a minute.
    queries = [URL(u) for u in requested if "/1/timeseries/" in u]
    assert queries
    for q in queries:
        start, end = (int(x) for x in q.path.strip("/").split("/")[-2:])
        assert start % 900 == 0 and end % 60 == 0 and 86400 <= end - start < 86400 + 900, q


async def test_dashboard_shows_the_api_error(
    client: TestClient, app_keys: NewApp, page: object
) -> None:
    url = client.make_url("/dashboard/").with_query(app=app_keys.app_id, key="apr_wrong")
    await page.goto(str(url))  # type: ignore[attr-defined]
    status = page.locator("#status.error")  # type: ignore[attr-defined]
    await status.wait_for(timeout=15_000)
    assert "wrong key" in await status.inner_text()


async def test_dashboard_of_an_app_without_events_shows_the_client_snippet(
    client: TestClient, app_keys: NewApp, page: object
) -> None:
    url = client.make_url("/dashboard/").with_query(
        app=app_keys.app_id, key=app_keys.read_key or "", range="3600"
    )
    await page.goto(str(url))  # type: ignore[attr-defined]
    await page.locator("#status").filter(has_text="0 calls").wait_for(timeout=15_000)  # type: ignore[attr-defined]
    await page.locator("#empty").wait_for(state="visible", timeout=5_000)  # type: ignore[attr-defined]
    snippet = await page.inner_text("#snippet")  # type: ignore[attr-defined]
    base = str(client.make_url("")).rstrip("/")
    assert f'Sender("{app_keys.app_id}", "YOUR_WRITE_KEY", "{base}")' in snippet
    assert "ApinalyticsMiddleware" in snippet
    assert app_keys.read_key and app_keys.read_key not in snippet


async def test_dashboard_of_an_app_with_older_events_does_not_show_the_snippet(
    client: TestClient, app_keys: NewApp, page: object
) -> None:
    old = [event(timestamp=time.time() - 3 * 86400)]
    resp = await client.post("/1/events/", json=old, headers=write_headers(app_keys))
    assert resp.status == 200
    url = client.make_url("/dashboard/").with_query(
        app=app_keys.app_id, key=app_keys.read_key or "", range="3600"
    )
    await page.goto(str(url))  # type: ignore[attr-defined]
    await page.locator("#status").filter(has_text="0 calls").wait_for(timeout=15_000)  # type: ignore[attr-defined]
    assert await page.is_hidden("#empty")  # type: ignore[attr-defined]
