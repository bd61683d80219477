"""Every number the dashboard shows is the query API's answer for its range, and
agrees with the events sent (SPEC "Dashboard", issue 21: headline, charts, tables)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from apinalytics.apps import NewApp

from ..helpers import read_headers
from .conftest import CARDS, CHARTS, TABLES, Browser, open_dashboard, realistic_events, seed

pytestmark = pytest.mark.browser


async def api(client: TestClient, app: NewApp, start: int, end: int, **params: Any) -> Any:
    resp = await client.get(
        f"/1/timeseries/{start}/{end}/", params=params, headers=read_headers(app)
    )
    assert resp.status == 200, await resp.text()
    return (await resp.json())["groups"]


def whole(groups: Any) -> dict[str, Any]:
    return {k: v[0][1] for k, v in groups.items() if v}


async def rows(page: Any, table: str) -> dict[str, dict[str, str]]:
    """Each row of a table: its key -> {column: raw value}."""
    got: dict[str, dict[str, str]] = await page.evaluate(
        """(id) => Object.fromEntries([...document.querySelectorAll(`#${id} tbody tr[data-key]`)]
            .map((tr) => [tr.dataset.key, Object.fromEntries([...tr.querySelectorAll('td')]
                .map((td) => [td.dataset.col, td.dataset.value ?? null]))]))""",
        table,
    )
    return got


async def test_headline_tables_and_charts_are_the_api_answers(
    client: TestClient, app_keys: NewApp, tab: Browser
) -> None:
    events = realistic_events(600, 86400)
    await seed(client, app_keys, events)
    requested: list[str] = []
    tab.page.on("request", lambda r: requested.append(r.url))
    await open_dashboard(tab, client, app_keys, app_keys.read_key)
    page = tab.page
    assert await page.evaluate("() => document.body.dataset.state") == "ready"
    period = await page.evaluate("() => Apx.stats.period")
    start, end = period["start"], period["end"]
    assert start % 900 == 0 and end % 60 == 0 and 86400 <= end - start < 86400 + 900

    # Headline: what the API answers for the range, and what was sent.
    codes = whole(await api(client, app_keys, start, end, group="status_code"))
    sent_codes = Counter(str(e["status_code"]) for e in events)
    assert codes == sent_codes
    errors = sum(n for c, n in codes.items() if c.startswith("5"))
    cards = {k: await page.get_attribute(f"#h-{k}", "data-value") for k in CARDS}
    assert int(cards["requests"]) == len(events)
    assert float(cards["errorRate"]) == pytest.approx(errors / len(events))
    for p in (50, 95, 99):
        expected = whole(await api(client, app_keys, start, end, aggregation=f"percentile_{p}"))
        assert float(cards[f"p{p}"]) == pytest.approx(next(iter(expected.values())))
    assert int(cards["consumers"]) == len({e["consumer_id"] for e in events} - {""})
    # The previous day had no events: no change to show, and it says so.
    assert await page.get_attribute("#h-requests", "data-prev") == "0"

    # Endpoints: calls and errors as sent; p50, p95, mean as the API answers.
    table = await rows(page, "t-endpoints")
    calls = Counter(e["function"] for e in events)
    errs = Counter(e["function"] for e in events if e["status_code"] >= 500)
    p50 = whole(
        await api(client, app_keys, start, end, group="function", aggregation="percentile_50")
    )
    p95 = whole(
        await api(client, app_keys, start, end, group="function", aggregation="percentile_95")
    )
    mean = whole(await api(client, app_keys, start, end, group="function", aggregation="mean"))
    top = [f for f, _ in calls.most_common()][:10]
    assert set(table) == set(top) | {"(other)"}
    for fn in top:
        row = table[fn]
        assert int(row["calls"]) == calls[fn]
        assert float(row["errorRate"]) == pytest.approx(errs[fn] / calls[fn])
        assert float(row["p50"]) == pytest.approx(p50[fn])
        assert float(row["p95"]) == pytest.approx(p95[fn])
        assert float(row["mean"]) == pytest.approx(mean[fn])
        methods = {e["method"] for e in events if e["function"] == fn}
        assert row["method"] == ", ".join(sorted(methods))
    rest = [f for f in calls if f not in top]
    assert int(table["(other)"]["calls"]) == sum(calls[f] for f in rest)
    assert table["(other)"]["p95"] is None  # not computable from the others' p95

    # Consumers: calls, errors, p95, last seen (the last bucket with a call).
    table = await rows(page, "t-consumers")
    ccalls = Counter(e["consumer_id"] for e in events)
    cerrs = Counter(e["consumer_id"] for e in events if e["status_code"] >= 500)
    cp95 = whole(
        await api(client, app_keys, start, end, group="consumer_id", aggregation="percentile_95")
    )
    for c, _ in ccalls.most_common()[:10]:
        row = table[c]
        assert int(row["calls"]) == ccalls[c]
        assert float(row["errorRate"]) == pytest.approx(cerrs[c] / ccalls[c])
        assert float(row["p95"]) == pytest.approx(cp95[c])
        last = max(e["timestamp"] for e in events if e["consumer_id"] == c)
        assert int(row["lastSeen"]) == int(last // 900 * 900)

    # Status codes: every code sent, its class and its share.
    table = await rows(page, "t-status")
    top_codes = [c for c, _ in sent_codes.most_common()][:10]
    for code in top_codes:
        assert int(table[code]["calls"]) == sent_codes[code]
        assert table[code]["cls"] == f"{code[0]}xx"

    # Every category label is present, and every name shown whole or with a tooltip.
    legends = await page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('.chart')].map((c) =>
            [c.id, [...c.querySelectorAll('.legend-item')].map((i) => i.dataset.label)]))"""
    )
    assert legends == {
        "c-requests": ["2xx", "3xx", "4xx", "5xx"],
        "c-latency": ["p50", "p95", "p99"],
        "c-errors": ["5xx share"],
    }
    cut = await page.evaluate(
        """() => [...document.querySelectorAll('td.name button, td.name span')]
            .filter((b) => b.scrollWidth > b.clientWidth && !b.title.includes(b.textContent))
            .map((b) => b.textContent)"""
    )
    assert cut == []
    names = await page.locator("#t-endpoints td[data-col=name]").all_inner_texts()
    assert "(none)" in names or "" not in top

    # The charts' series are the API's buckets: requests per class add up to the calls.
    series = await page.evaluate(
        "() => Object.fromEntries([...document.querySelectorAll('.chart')].map((c) => [c.id, JSON.parse(c.dataset.series)]))"
    )
    per_class = {k: sum(v) for k, v in series["c-requests"].items()}
    for cls in ("2xx", "3xx", "4xx", "5xx"):
        assert per_class[cls] == sum(n for c, n in sent_codes.items() if c[0] == cls[0])
    p95t = await api(client, app_keys, start, end, granularity=900, aggregation="percentile_95")
    drawn = [v for v in series["c-latency"]["p95"] if v is not None]
    assert drawn == pytest.approx([v for _, v in next(iter(p95t.values()))])
    for chart in CHARTS:
        assert await page.get_attribute(f"#{chart}", "data-ready") == "true"
    for t in TABLES:
        assert await page.get_attribute(f"#{t}", "data-ready") == "true"

    # The requests of one load, all for this app's range; never a key in a URL.
    queries = [URL(u) for u in requested if "/1/timeseries/" in u]
    methods = len({e["method"] for e in events})
    assert len(queries) == 21 + methods
    for q in queries:
        assert app_keys.read_key not in str(q)
        assert "precision" not in q.query  # a day's percentiles are exact
    assert app_keys.read_key not in page.url
    tab.assert_no_errors()


async def test_sorting_a_column_puts_the_slowest_endpoints_first(
    client: TestClient, app_keys: NewApp, tab: Browser
) -> None:
    events = realistic_events(300, 86400, seed=3)
    await seed(client, app_keys, events)
    await open_dashboard(tab, client, app_keys, app_keys.read_key)
    page = tab.page
    await page.click("#t-endpoints th:nth-child(6) button")  # p95, descending
    values = await page.eval_on_selector_all(
        "#t-endpoints tbody tr:not(.other) td[data-col=p95]",
        "(tds) => tds.map((td) => Number(td.dataset.value))",
    )
    assert values == sorted(values, reverse=True) and len(values) == 10
    period = await page.evaluate("() => Apx.stats.period")
    p95 = whole(
        await api(
            client,
            app_keys,
            period["start"],
            period["end"],
            group="function",
            aggregation="percentile_95",
        )
    )
    assert values == pytest.approx(sorted(p95.values(), reverse=True)[:10])
    tab.assert_no_errors()
