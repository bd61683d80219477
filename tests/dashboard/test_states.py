"""States that say what happened (issue 21, item 6): wrong key, empty app, an app
with only older events, the service down, past retention; and the page opened from
disk with the service's URL (item 9)."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from apinalytics.apps import NewApp

from ..helpers import catch_up, event, post_accepted
from .conftest import CARDS, CHARTS, Browser, open_dashboard, realistic_events, seed, wait_loaded

pytestmark = pytest.mark.browser

INDEX = Path(__file__).resolve().parents[2] / "dashboard" / "index.html"


async def drawn(tab: Browser) -> dict[str, object]:
    got: dict[str, object] = await tab.page.evaluate(
        """() => ({
            canvases: document.querySelectorAll('main canvas').length,
            rows: document.querySelectorAll('main tbody tr').length,
            cards: [...document.querySelectorAll('.card .value')].map((v) => v.textContent).join(''),
            ready: document.querySelectorAll('[data-ready]').length,
        })"""
    )
    return got


async def storage(tab: Browser) -> dict[str, str]:
    got: dict[str, str] = await tab.page.evaluate(
        "() => Object.fromEntries(Object.entries(localStorage))"
    )
    return got


async def test_a_wrong_key_clears_the_charts_and_is_not_stored(
    client: TestClient, app_keys: NewApp, tab: Browser
) -> None:
    await seed(client, app_keys, realistic_events(100, 86400))
    await open_dashboard(tab, client, app_keys, app_keys.read_key)
    assert (await drawn(tab))["canvases"] == len(CHARTS)
    assert (await storage(tab))["apinalytics.key"] == app_keys.read_key

    page = tab.page
    await page.fill("#key", "apr_wrong")
    await page.click("button[type=submit]")
    assert await wait_loaded(tab) == "unauthorized"
    assert "wrong key" in (await page.inner_text("#status")).lower()
    assert await drawn(tab) == {"canvases": 0, "rows": 0, "cards": "", "ready": 0}
    kept = await storage(tab)
    assert "apinalytics.key" not in kept
    assert not any("apr_wrong" in v for v in kept.values())
    assert "apr_wrong" not in page.url
    assert await page.input_value("#key") == ""
    # The same on a first visit: nothing at all is kept.
    fresh = await page.context.browser.new_context()
    other = Browser(await fresh.new_page())
    await open_dashboard(other, client, app_keys, "apr_wrong")
    assert await other.page.evaluate("() => document.body.dataset.state") == "unauthorized"
    assert await storage(other) == {}
    await fresh.close()


async def test_an_app_without_events_shows_the_client_snippet(
    client: TestClient, app_keys: NewApp, tab: Browser
) -> None:
    await open_dashboard(tab, client, app_keys, app_keys.read_key, "3600")
    page = tab.page
    assert await page.evaluate("() => document.body.dataset.state") == "empty"
    assert await page.is_visible("#empty") and await page.is_hidden("#board")
    snippet = await page.inner_text("#snippet")
    base = str(client.make_url("")).rstrip("/")
    assert f'Sender("{app_keys.app_id}", "YOUR_WRITE_KEY", "{base}")' in snippet
    assert "ApinalyticsMiddleware" in snippet
    curl = await page.inner_text("#curl")
    assert f"X-Auth-User: {app_keys.app_id}" in curl and f"{base}/1/events/" in curl
    assert app_keys.read_key and app_keys.read_key not in snippet + curl
    tab.assert_no_errors()


async def test_an_app_with_older_events_shows_an_empty_range_not_the_snippet(
    client: TestClient, app_keys: NewApp, tab: Browser
) -> None:
    await post_accepted(client, app_keys, [event(timestamp=time.time() - 3 * 86400)])
    await open_dashboard(tab, client, app_keys, app_keys.read_key, "3600")
    page = tab.page
    assert await page.evaluate("() => document.body.dataset.state") == "ready"
    assert await page.is_hidden("#empty")
    assert await page.get_attribute("#h-requests", "data-value") == "0"
    assert (await drawn(tab))["canvases"] == len(CHARTS)
    assert "No calls" in await page.inner_text("#t-endpoints")
    tab.assert_no_errors()


async def test_opened_from_disk_it_reads_the_service_and_says_when_it_is_down(
    client: TestClient, app_keys: NewApp, tab: Browser
) -> None:
    await seed(client, app_keys, realistic_events(100, 86400))
    page = tab.page
    base = str(client.make_url("")).rstrip("/")
    await page.goto(INDEX.as_uri())
    assert await page.is_visible("#base")  # the service's URL is asked for from disk
    await page.fill("#base", base)
    await page.fill("#app", app_keys.app_id)
    await page.fill("#key", app_keys.read_key or "")
    await page.click("button[type=submit]")
    assert await wait_loaded(tab) == "ready"
    assert await page.get_attribute("#h-requests", "data-value") == "100"

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    await page.fill("#base", f"http://127.0.0.1:{closed}")
    await page.click("button[type=submit]")
    assert await wait_loaded(tab) == "down"
    assert "does not answer" in await page.inner_text("#status")
    assert (await drawn(tab))["canvases"] == 0


async def test_past_retention_the_rollups_answer_and_percentiles_say_why_not(
    client: TestClient, app_keys: NewApp, tab: Browser, db: asyncpg.Connection
) -> None:
    events = realistic_events(200, 86400)
    await seed(client, app_keys, events)
    # The rollups hold the day before its raw events pass their horizon (the service's
    # own materializer may not have run yet on a busy machine).
    await catch_up(db)
    # Raw events are kept one hour: a day's percentiles are past retention.
    await db.execute("UPDATE retention SET keep_s = 3600 WHERE relation = 'events'")
    await open_dashboard(tab, client, app_keys, app_keys.read_key)
    page = tab.page
    assert await page.evaluate("() => document.body.dataset.state") == "ready"
    assert await page.get_attribute("#h-requests", "data-value") == str(len(events))
    assert "past" in await page.inner_text("#range-note")
    assert "past retention" in await page.inner_text("#c-latency .note")
    assert await page.inner_text("#h-p95 .value") == "—"
    for card in CARDS:
        assert await page.is_visible(f"#h-{card}")


async def test_a_key_in_an_old_link_is_used_and_taken_out_of_the_address_bar(
    client: TestClient, app_keys: NewApp, tab: Browser
) -> None:
    await seed(client, app_keys, realistic_events(20, 3000))
    url = client.make_url("/dashboard/").with_query(
        app=app_keys.app_id, key=app_keys.read_key or "", range="3600"
    )
    await tab.page.goto(str(url))
    assert await wait_loaded(tab) == "ready"
    assert await tab.page.get_attribute("#h-requests", "data-value") == "20"
    assert app_keys.read_key not in tab.page.url
    assert "key=" not in tab.page.url


async def test_a_percentile_refused_as_overloaded_is_asked_again(
    client: TestClient, app_keys: NewApp, tab: Browser
) -> None:
    """The service answers 503 overloaded to a raw read that waited its turn too long
    (docs/limits.md); the page asks again after Retry-After and draws the answer."""
    await seed(client, app_keys, realistic_events(50, 3000))
    page = tab.page
    refused: list[str] = []
    asked: list[str] = []

    async def overload_once(route: Any) -> None:
        url = route.request.url
        if "aggregation=percentile_95" in url and "granularity" not in url and "group" not in url:
            asked.append(url)
            if not refused:
                refused.append(url)
                await route.fulfill(
                    status=503,
                    headers={"Retry-After": "1", "Content-Type": "application/json"},
                    body='{"error": {"code": "overloaded", "message": "2 reads of raw events are running"}}',
                )
                return
        await route.continue_()

    await page.route("**/1/timeseries/**", overload_once)
    await open_dashboard(tab, client, app_keys, app_keys.read_key, "3600")
    assert await page.evaluate("() => document.body.dataset.state") == "ready"
    # Asked twice for the current and once for the previous period's p95.
    assert len(refused) == 1 and asked.count(refused[0]) == 2
    assert await page.get_attribute("#h-p95", "data-value") not in (None, "")
