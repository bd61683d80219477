"""Drill-down (issue 21, item 4): a click on an endpoint, consumer or status class
filters every panel with include filters, shown as removable chips; the state lives
in the URL and survives a reload; the key never does."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from apinalytics.apps import NewApp

from .conftest import Browser, open_dashboard, realistic_events, seed, wait_loaded

pytestmark = pytest.mark.browser


def includes(urls: list[str]) -> list[set[str]]:
    return [set(URL(u).query.getall("include", [])) for u in urls if "/1/timeseries/" in u]


async def headline(page: Any) -> int:
    return int(await page.get_attribute("#h-requests", "data-value"))


async def chips(page: Any) -> list[str]:
    texts: list[str] = await page.locator("#filters .chip").all_inner_texts()
    return [t.replace("\u00d7", "").strip() for t in texts]


async def test_clicks_filter_every_panel_and_the_url_keeps_them(
    client: TestClient, app_keys: NewApp, tab: Browser
) -> None:
    events = realistic_events(400, 86400, seed=11)
    await seed(client, app_keys, events)
    await open_dashboard(tab, client, app_keys, app_keys.read_key)
    page = tab.page
    assert await headline(page) == len(events)
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))

    # An endpoint.
    await page.click("#t-endpoints tr[data-key='get_order'] button.pick")
    assert await wait_loaded(tab) == "ready"
    get_order = [e for e in events if e["function"] == "get_order"]
    assert await headline(page) == len(get_order)
    assert URL(page.url).query.getall("f") == ["function:get_order"]
    sent = includes(requested)
    assert sent and all("function:get_order" in s for s in sent)
    assert await chips(page) == ["endpoint: get_order"]
    assert await page.locator("#t-endpoints tbody tr").count() == 1

    # A consumer, on top of it.
    requested.clear()
    await page.click("#t-consumers tr[data-key='acme-corp'] button.pick")
    assert await wait_loaded(tab) == "ready"
    both = [e for e in get_order if e["consumer_id"] == "acme-corp"]
    assert await headline(page) == len(both)
    assert all({"function:get_order", "consumer_id:acme-corp"} <= s for s in includes(requested))

    # A status class: the codes of it the range has (phase 0 asks which, unfiltered);
    # the error rate of 2xx calls is 0 without asking.
    requested.clear()
    await page.click("#t-status td[data-col=cls] button >> text=2xx")
    assert await wait_loaded(tab) == "ready"
    ok = [e for e in both if 200 <= e["status_code"] < 300]
    assert await headline(page) == len(ok)
    assert await page.get_attribute("#h-errorRate", "data-value") == "0"
    sent_codes = {
        frozenset(v for v in s if v.startswith("status_code:")) for s in includes(requested)
    }
    present = {f"status_code:{e['status_code']}" for e in both if 200 <= e["status_code"] < 300}
    assert sent_codes == {frozenset(), frozenset(present)}, sent_codes
    assert URL(page.url).query.getall("f") == [
        "function:get_order",
        "consumer_id:acme-corp",
        "status_code:2xx",
    ]

    # A reload keeps the view (the key comes from this browser, never from the URL).
    assert app_keys.read_key not in page.url
    await page.reload()
    assert await wait_loaded(tab) == "ready"
    assert await headline(page) == len(ok)
    assert await chips(page) == ["endpoint: get_order", "consumer: acme-corp", "status: 2xx"]

    # Removing a chip removes its filter.
    await page.click("#filters .chip >> text=endpoint: get_order")
    assert await wait_loaded(tab) == "ready"
    rest = [e for e in events if e["consumer_id"] == "acme-corp" and 200 <= e["status_code"] < 300]
    assert await headline(page) == len(rest)
    assert URL(page.url).query.getall("f") == ["consumer_id:acme-corp", "status_code:2xx"]

    # Back goes to the previous view.
    await page.go_back()
    assert await wait_loaded(tab) == "ready"
    assert await headline(page) == len(ok)
    tab.assert_no_errors()


async def test_ranges_and_custom_range_set_their_granularity(
    client: TestClient, app_keys: NewApp, tab: Browser
) -> None:
    await seed(client, app_keys, realistic_events(50, 3 * 86400, seed=5))
    await open_dashboard(tab, client, app_keys, app_keys.read_key, "3600")
    page = tab.page
    buckets = {}
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    for range_ in ("3600", "86400", "604800", "2592000"):
        requested.clear()
        await page.select_option("#range", range_)
        assert await wait_loaded(tab) == "ready"
        p = await page.evaluate("() => Apx.stats.period")
        buckets[range_] = p["bucket"]
        assert p["start"] % p["bucket"] == 0 and p["end"] % 60 == 0
        assert URL(page.url).query["range"] == range_
        # Beyond two days percentiles ask for the histograms' approximation (SPEC).
        asked = {
            URL(u).query.get("precision")
            for u in requested
            if "percentile" in URL(u).query.get("aggregation", "")
        }
        assert asked == ({"approximate"} if int(range_) > 2 * 86400 else {None}), asked
    assert buckets == {"3600": 60, "86400": 900, "604800": 3600, "2592000": 21600}

    await page.select_option("#range", "custom")
    await page.fill("#from", "2026-01-01T00:00")
    await page.fill("#to", "2026-01-03T00:00")
    await page.click("button[type=submit]")
    assert await wait_loaded(tab) == "ready"
    p = await page.evaluate("() => Apx.stats.period")
    assert p["end"] - p["start"] == 2 * 86400 and p["bucket"] == 900
    q = URL(page.url).query
    assert q["range"] == "custom" and int(q["to"]) - int(q["from"]) == 2 * 86400

    # Live: the last hour, refreshed by itself.
    await page.click("#live")
    assert await wait_loaded(tab) == "ready"
    assert URL(page.url).query["live"] == "1" and URL(page.url).query["range"] == "3600"
    loads = await page.evaluate("() => Apx.stats.requests")
    await page.wait_for_function(f"() => Apx.stats.requests > {loads}", timeout=15_000)
    tab.assert_no_errors()
