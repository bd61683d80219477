"""SPEC "Clients": clients of the 2014 service work unchanged (docs/compatibility.md).

The two published clients are replayed byte for byte: the Go sender (its JSON as Go's
encoding/json writes it, to each path its documentation used) and the example
dashboard (each of its eight charts' requests as jQuery 2.1.1 builds them, from a page
opened from disk with ``?appId=…&key=…``). Their answers must be what the dashboard
reads: the same fields, in the same units, every series it indexes non-empty.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from apinalytics.apps import NewApp

from .test_keys import dashboard_2014_padding

NOW = int(time.time())
HOUR, DAY = 3600, 86400

# (timestamp, consumer_id, function, response_us, status_code, url)
EVENTS = [
    (NOW - 100, "acme", "get_order", 1000, 200, "/orders/7?id=7&expand=<items>"),
    (NOW - 200, "acme", "list_orders", 3000, 200, "/orders"),
    (NOW - 1000, "", "get_order", 2000, 404, "/orders/9"),
    (NOW - 2 * HOUR, "bolt", "get_order", 5000, 500, "/orders/8"),
    (NOW - 3 * DAY, "acme", "list_orders", 4000, 200, "/orders"),
    (NOW - 20 * DAY, "bolt", "unknown", 6000, 200, "/ping"),
]


def go_json(events: list[tuple[Any, ...]]) -> bytes:
    """A batch as the Go sender's json.Marshal writes it: fields in struct order, the
    timestamp an integer (int64 seconds), function and data always present (their
    ``omitempty`` tags are malformed, so Go ignores them), ``data`` null, and <, >, &
    escaped as \\u003c, \\u003e, \\u0026."""

    def string(s: str) -> str:
        return '"' + s.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e") + '"'

    items = [
        f'{{"timestamp":{ts},"consumer_id":{string(consumer)},"method":"GET",'
        f'"url":{string(url)},"function":{string(function)},"response_us":{us},'
        f'"status_code":{status},"data":null}}'
        for ts, consumer, function, us, status, url in events
    ]
    return ("[" + ",".join(items) + "]").encode()


def go_headers(app: NewApp) -> dict[str, str]:
    assert app.write_key
    return {
        "User-Agent": "Go-http-client/1.1",
        "Content-Type": "application/json",
        "X-Auth-User": app.app_id,
        "X-Auth-Key": app.write_key,
    }


async def send_like_the_go_sender(client: TestClient, app: NewApp) -> None:
    """EVENTS in batches, to each spelling of the path the 2014 documents used."""
    for path, batch in [
        ("/1/event/", EVENTS[0:2]),  # the client's own example
        ("/1/event", EVENTS[2:3]),
        ("/1/events/", EVENTS[3:4]),  # the service's README
        ("/1/events", EVENTS[4:6]),
    ]:
        resp = await client.post(path, data=go_json(batch), headers=go_headers(app))
        # The Go sender treats anything but 200 as a failure.
        assert resp.status == 200, await resp.text()
        assert await resp.json() == {"accepted": len(batch)}


async def test_the_go_sender(client: TestClient, app_keys: NewApp, db: asyncpg.Connection) -> None:
    await send_like_the_go_sender(client, app_keys)
    rows = await db.fetch(
        "SELECT extract(epoch FROM time)::bigint AS ts, consumer_id, function, response_us, "
        "status_code, url, method, data FROM events ORDER BY time DESC"
    )
    assert [tuple(r.values())[:6] for r in rows] == EVENTS
    assert {(r["method"], r["data"]) for r in rows} == {("GET", None)}


def dashboard_2014_page_params(page_query: str) -> dict[str, str]:
    """apinalytics.js's QueryString: split on "&", then on "=", value not decoded, and
    the key padded with "=" to a multiple of four."""
    params = {}
    for pair in page_query.split("&"):
        parts = pair.split("=")
        params.setdefault(parts[0], parts[1] if len(parts) > 1 else "")
    params["key"] = dashboard_2014_padding(params["key"])
    return params


# The eight charts of the 2014 dashboard's page: (id, options, range in seconds).
CHARTS: list[tuple[str, dict[str, str], int]] = [
    ("chart1_calls_per_consumer_week", {"group": "consumer_id", "granularity": "hour"}, 7 * DAY),
    ("chart2_calls_per_function_day", {"group": "function", "granularity": "hour"}, DAY),
    (
        "chart3_mean_per_function_day",
        {"group": "function", "value": "response_us", "aggregation": "mean", "granularity": "hour"},
        DAY,
    ),
    (
        "chart3_1_mean_per_function_hour",
        {
            "group": "function",
            "value": "response_us",
            "aggregation": "mean",
            "granularity": "minute",
        },
        HOUR,
    ),
    ("chart4_functions_today", {"group": "function"}, DAY),
    ("chart5_consumers_month", {"group": "consumer_id"}, 30 * DAY),
    ("chart6_status_codes_today", {"group": "status_code"}, DAY),
    (
        "chart7_total_response_time_per_minute",
        {"value": "response_us", "aggregation": "sum", "granularity": "minute"},
        HOUR,
    ),
]

SECONDS = {"minute": 60, "hour": HOUR}
FIELD = {"consumer_id": 1, "function": 2, "status_code": 4}


def oracle(app_id: str, options: dict[str, str], start: int, end: int) -> dict[str, Any]:
    """What the 2014 README promises for EVENTS, computed by brute force."""
    step = SECONDS.get(options.get("granularity", ""), end - start)
    series: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for ev in EVENTS:
        if start <= ev[0] < end:
            group = str(ev[FIELD[options["group"]]]) if "group" in options else app_id
            bucket = ev[0] // step * step if "granularity" in options else start
            series[group][bucket].append(ev[3])
    aggregate = {
        "count": len,
        "sum": sum,
        "mean": lambda v: sum(v) / len(v),
    }[options.get("aggregation", "count")]
    return {
        "groups": {g: [[b, aggregate(v)] for b, v in sorted(s.items())] for g, s in series.items()},
        "start": start,
        "end": end,
        "granularity": step * 1000,
    }


@pytest.mark.parametrize(("options", "span"), [c[1:] for c in CHARTS], ids=[c[0] for c in CHARTS])
async def test_the_dashboard(
    client: TestClient, app_keys: NewApp, options: dict[str, str], span: int
) -> None:
    await send_like_the_go_sender(client, app_keys)
    page = dashboard_2014_page_params(f"appId={app_keys.app_id}&key={app_keys.read_key}")
    start, end = NOW - span, NOW
    # jQuery 2.1.1's $.param over the chart's settings: null and "" both become "".
    settings = {
        "value": "",
        "group": None,
        "granularity": None,
        "aggregation": None,
        "include": None,
    }
    settings.update(options)
    query = "&".join(f"{k}={quote(v or '', safe='')}" for k, v in settings.items())
    headers = {
        "X-Auth-User": page["appId"],
        "X-Auth-Key": page["key"],
        "Origin": "null",  # a page opened from disk
        "Accept": "application/json, text/javascript, */*; q=0.01",
    }
    preflight = await client.options(
        f"/1/timeseries/{start}/{end}/?{query}",
        headers={
            "Origin": "null",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "x-auth-key, x-auth-user",
        },
    )
    assert preflight.status in (200, 204)
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"

    resp = await client.get(f"/1/timeseries/{start}/{end}/?{query}", headers=headers)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    body = await resp.json()
    assert body == oracle(app_keys.app_id, options, start, end)
    # What apinalytics.js reads: data.start and data.end in seconds, data.granularity
    # in milliseconds, and without granularity series[0][1] of every group.
    if "granularity" not in options:
        for series in body["groups"].values():
            assert isinstance(series[0][1], int | float)


async def test_an_empty_consumer_is_the_group_the_dashboard_calls_unknown(
    client: TestClient, app_keys: NewApp
) -> None:
    await send_like_the_go_sender(client, app_keys)
    assert app_keys.read_key
    resp = await client.get(
        f"/1/timeseries/{NOW - DAY}/{NOW}/",
        params={"group": "consumer_id"},
        headers={"X-Auth-User": app_keys.app_id, "X-Auth-Key": app_keys.read_key + "="},
    )
    assert (await resp.json())["groups"][""] == [[NOW - DAY, 1]]


@pytest.mark.parametrize("path", ["/u", "/u/"])
async def test_the_2014_key_page_leads_to_the_applications(client: TestClient, path: str) -> None:
    resp = await client.get(path, allow_redirects=False)
    assert resp.status == 301
    assert resp.headers["Location"] == "/apps"


async def test_events_posted_to_the_bare_host_are_refused_not_lost_silently(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    """The Go sender's doc comment calls its url "usually http://apinalytics.tanktop.tv";
    its examples and the service's README post to /1/event/ or /1/events/. A sender
    configured with the bare host gets a 405 (which it logs), never a 200."""
    resp = await client.post("/", data=go_json(EVENTS[:1]), headers=go_headers(app_keys))
    assert resp.status == 405
    assert await db.fetchval("SELECT count(*) FROM events") == 0


async def test_includes_as_jquery_writes_an_array(client: TestClient, app_keys: NewApp) -> None:
    """The dashboard's plugin passes its ``include`` option to jQuery, which writes an
    array as include[]=…&include[]=… (SPEC: include is repeatable); it filters as
    include=… does, and may be mixed with it."""
    await send_like_the_go_sender(client, app_keys)
    assert app_keys.read_key
    headers = {"X-Auth-User": app_keys.app_id, "X-Auth-Key": app_keys.read_key}
    path = f"/1/timeseries/{NOW - DAY}/{NOW}/"
    for query in (
        "include%5B%5D=status_code%3A200&include%5B%5D=status_code%3A404",
        "include=status_code%3A200&include%5B%5D=status_code%3A404",
    ):
        resp = await client.get(f"{path}?{query}", headers=headers)
        assert (await resp.json())["groups"] == {app_keys.app_id: [[NOW - DAY, 3]]}
    resp = await client.get(f"{path}?include%5B%5D=consumer_id%3Abolt", headers=headers)
    assert (await resp.json())["groups"] == {app_keys.app_id: [[NOW - DAY, 1]]}


def jquery_param(pairs: list[tuple[str, str]]) -> str:
    """jQuery 2.1.1's $.param: encodeURIComponent of each, then %20 written as +."""
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs).replace(
        "%20", "+"
    )


async def test_a_space_written_as_plus(client: TestClient, app_keys: NewApp) -> None:
    batch = [(NOW - 60, "acme corp", "list all orders", 100, 200, "/orders")]
    resp = await client.post("/1/event/", data=go_json(batch), headers=go_headers(app_keys))
    assert resp.status == 200
    assert app_keys.read_key
    query = jquery_param([("group", "consumer_id"), ("include", "function:list all orders")])
    assert "+" in query
    resp = await client.get(
        f"/1/timeseries/{NOW - HOUR}/{NOW}/?{query}",
        headers={"X-Auth-User": app_keys.app_id, "X-Auth-Key": app_keys.read_key},
    )
    assert (await resp.json())["groups"] == {"acme corp": [[NOW - HOUR, 1]]}
