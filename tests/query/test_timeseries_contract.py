"""SPEC "Querying" — ``GET /1/timeseries/<start>/<end>/``, as a contract.

* ``start`` and ``end`` are UNIX epoch seconds; the range is ``[start, end)``.
* ``value`` (``response_us``), ``granularity`` (integer seconds or second, minute,
  hour, day, week; default the whole range), ``aggregation`` (count, mean, min, max,
  sum, percentile_X with X 1..99; default count), ``group`` (consumer_id, method,
  url, function, status_code; default one group), ``include`` (``field:value``,
  repeatable, OR within a field, AND across fields, value after the first ``:``).
* An empty parameter means its default.
* The response maps each group key (a string) to ``[bucket_start_seconds, value]``
  pairs in time order; without group one group keyed by the Application ID; without
  granularity one pair stamped with ``start`` and ``granularity = (end-start)*1000``;
  granularity always in milliseconds.
* Buckets are aligned to the epoch in UTC, weeks start Monday 00:00 UTC; edge buckets
  count only events inside the range; empty buckets are left out.
* count, min, max, sum are integers; mean and percentiles numbers (percentile_cont).
* Read-your-writes, back-dated events included.
* Bad parameters are 400 naming the parameter; too many buckets is 400; a query over
  the statement timeout is cancelled with a clear error.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from apinalytics.apps import NewApp
from apinalytics.keys import DB
from apinalytics.query.model import DAY, HOUR, WEEK, WEEK_ORIGIN
from apinalytics.settings import Settings

from ..conftest import MakeSettings
from ..helpers import assert_error, catch_up, event, post_accepted, read_headers, write_headers

T = WEEK_ORIGIN + 2900 * WEEK  # 2025-08-04, a Monday 00:00 UTC


@pytest.fixture
def settings(make_settings: MakeSettings) -> Settings:
    # Accept events back to 2014, so SPEC's own example can be sent through ingest.
    return make_settings(max_event_age_s=20 * 366 * DAY, max_buckets=1000)


async def get(
    client: TestClient,
    app: NewApp,
    path: str,
    params: list[tuple[str, str]] | dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    status: int = 200,
) -> Any:
    resp = await client.get(
        path, params=params or {}, headers={**read_headers(app), **(headers or {})}
    )
    assert resp.status == status, await resp.text()
    return await resp.json()


async def test_spec_example(client: TestClient, app_keys: NewApp) -> None:
    await post_accepted(
        client,
        app_keys,
        [
            event(timestamp=1413378000 + i * 600, function=f)
            for f in ("actorlist", "full_list")
            for i in range(3)
        ],
    )
    body = await get(
        client,
        app_keys,
        "/1/timeseries/1413295200/1413385200/",
        {"granularity": "hour", "group": "function"},
    )
    assert body == {
        "groups": {"actorlist": [[1413378000, 3]], "full_list": [[1413378000, 3]]},
        "start": 1413295200,
        "end": 1413385200,
        "granularity": 3600000,
    }


async def test_defaults_one_group_one_pair(client: TestClient, app_keys: NewApp) -> None:
    await post_accepted(client, app_keys, [event(timestamp=T + 10), event(timestamp=T + 7200)])
    path = f"/1/timeseries/{T}/{T + DAY}"
    expected = {
        "groups": {app_keys.app_id: [[T, 2]]},
        "start": T,
        "end": T + DAY,
        "granularity": DAY * 1000,
    }
    assert await get(client, app_keys, path) == expected
    assert await get(client, app_keys, path + "/") == expected, "trailing slash is optional"
    empty = {k: "" for k in ("value", "granularity", "aggregation", "group", "include")}
    assert await get(client, app_keys, path, empty) == expected, "empty parameter = default"


async def test_no_events_no_group_is_one_empty_series(client: TestClient, app_keys: NewApp) -> None:
    body = await get(client, app_keys, f"/1/timeseries/{T}/{T + DAY}", {"granularity": "hour"})
    assert body["groups"] == {app_keys.app_id: []}
    body = await get(client, app_keys, f"/1/timeseries/{T}/{T + DAY}", {"group": "method"})
    assert body["groups"] == {}


AGGREGATIONS = [
    pytest.param("count", 4, id="count"),
    pytest.param("sum", 10, id="sum"),
    pytest.param("min", 1, id="min"),
    pytest.param("max", 4, id="max"),
    pytest.param("mean", 2.5, id="mean"),
    pytest.param("percentile_50", 2.5, id="median_interpolated"),
    pytest.param("percentile_1", 1.03, id="percentile_lowest"),
    pytest.param("percentile_99", 3.97, id="percentile_highest"),
]


@pytest.mark.parametrize(("aggregation", "expected"), AGGREGATIONS)
async def test_aggregations(
    client: TestClient, app_keys: NewApp, aggregation: str, expected: float
) -> None:
    await post_accepted(
        client, app_keys, [event(timestamp=T + 60 * i, response_us=i + 1) for i in range(4)]
    )
    body = await get(
        client, app_keys, f"/1/timeseries/{T}/{T + HOUR}", {"aggregation": aggregation}
    )
    [[stamp, value]] = body["groups"][app_keys.app_id]
    assert stamp == T
    assert value == pytest.approx(expected, rel=1e-12)
    integer = aggregation in ("count", "sum", "min", "max")
    assert isinstance(value, int) is integer, f"{aggregation} gave {value!r}"
    if not integer:
        assert isinstance(value, float)


async def test_group_keys_are_strings(client: TestClient, app_keys: NewApp) -> None:
    await post_accepted(
        client,
        app_keys,
        [event(timestamp=T + 1, status_code=200), event(timestamp=T + 2, status_code=503)],
    )
    body = await get(client, app_keys, f"/1/timeseries/{T}/{T + HOUR}", {"group": "status_code"})
    assert body["groups"] == {"200": [[T, 1]], "503": [[T, 1]]}


async def test_includes_or_within_and_across(client: TestClient, app_keys: NewApp) -> None:
    await post_accepted(
        client,
        app_keys,
        [
            event(timestamp=T + 1, function="a", consumer_id="x"),
            event(timestamp=T + 2, function="b", consumer_id="x"),
            event(timestamp=T + 3, function="c", consumer_id="x"),
            event(timestamp=T + 4, function="a", consumer_id="y"),
            event(timestamp=T + 5, function="a", consumer_id="x", url="/p?q=a:b"),
        ],
    )
    path = f"/1/timeseries/{T}/{T + HOUR}"
    params = [("include", "function:a"), ("include", "function:b"), ("include", "consumer_id:x")]
    body = await get(client, app_keys, path, params)
    assert body["groups"] == {app_keys.app_id: [[T, 3]]}
    body = await get(client, app_keys, path, [("include", "url:/p?q=a:b")])
    assert body["groups"] == {app_keys.app_id: [[T, 1]]}, "value is everything after the first :"
    body = await get(client, app_keys, path, [("include", "method:get")])
    assert body["groups"] == {app_keys.app_id: [[T, 5]]}, "methods match whatever their case"


async def test_include_the_longest_url_an_event_may_hold(
    client: TestClient, app_keys: NewApp, settings: Settings
) -> None:
    # Percent-encoded, 8,192 four-byte characters make a request line of about 98 KB.
    url = "/" + "\U0001f600" * (settings.max_url_length - 1)
    await post_accepted(client, app_keys, [event(timestamp=T + 1, url=url), event(timestamp=T + 2)])
    body = await get(client, app_keys, f"/1/timeseries/{T}/{T + HOUR}", [("include", f"url:{url}")])
    assert body["groups"] == {app_keys.app_id: [[T, 1]]}


async def test_custom_dimension(client: TestClient, app_keys: NewApp) -> None:
    await post_accepted(
        client,
        app_keys,
        [
            event(timestamp=T + 1, data={"plan": "pro"}),
            event(timestamp=T + 2, data={"plan": "free"}),
            event(timestamp=T + 3, data=None),
        ],
    )
    path = f"/1/timeseries/{T}/{T + HOUR}"
    body = await get(client, app_keys, path, {"group": "data.plan"})
    assert body["groups"] == {"": [[T, 1]], "free": [[T, 1]], "pro": [[T, 1]]}
    body = await get(client, app_keys, path, [("include", "data.plan:pro")])
    assert body["groups"] == {app_keys.app_id: [[T, 1]]}


async def test_buckets_epoch_aligned_empty_left_out_edges_clipped(
    client: TestClient, app_keys: NewApp
) -> None:
    await post_accepted(
        client,
        app_keys,
        [
            event(timestamp=T + 1800 - 1),  # before the range, in its first bucket
            event(timestamp=T + 1800),  # exactly at start
            event(timestamp=T + 3599.999999),  # last microsecond of the first bucket
            event(timestamp=T + 3 * HOUR),  # exactly on a boundary; hour 1 and 2 stay empty
            event(timestamp=T + 3 * HOUR + 1799),  # last second inside the range
            event(timestamp=T + 3 * HOUR + 1800),  # exactly at end: outside
        ],
    )
    body = await get(
        client, app_keys, f"/1/timeseries/{T + 1800}/{T + 3 * HOUR + 1800}", {"granularity": "hour"}
    )
    assert body["groups"] == {app_keys.app_id: [[T, 2], [T + 3 * HOUR, 2]]}
    assert body["granularity"] == 3_600_000


# A Wednesday, 03:00:05 UTC.
WEDNESDAY = T + 2 * DAY + 3 * HOUR + 5


@pytest.mark.parametrize(
    ("granularity", "stamp"),
    [
        pytest.param("week", T, id="week_starts_monday"),
        pytest.param("day", T + 2 * DAY, id="day_from_midnight"),
        pytest.param("7200", T + 2 * DAY + 2 * HOUR, id="two_hours_from_epoch"),
        # 7000 s buckets from the epoch differ from ones from time_bucket's own
        # default origin (2000-01-03), which is 2600 s off the epoch's grid.
        pytest.param("7000", WEDNESDAY // 7000 * 7000, id="seven_thousand_seconds_from_epoch"),
    ],
)
async def test_alignment(
    client: TestClient, app_keys: NewApp, granularity: str, stamp: int
) -> None:
    assert (WEDNESDAY - 946857600) % 7000 != WEDNESDAY % 7000
    await post_accepted(client, app_keys, [event(timestamp=WEDNESDAY + 0.25)])
    body = await get(
        client, app_keys, f"/1/timeseries/{T - WEEK}/{T + WEEK}", {"granularity": granularity}
    )
    assert body["groups"] == {app_keys.app_id: [[stamp, 1]]}


async def test_back_dated_event_is_read(client: TestClient, app_keys: NewApp) -> None:
    path = f"/1/timeseries/{T}/{T + 2 * DAY}"
    await post_accepted(client, app_keys, [event(timestamp=T + DAY + 5)])
    assert (await get(client, app_keys, path, {"granularity": "day"}))["groups"] == {
        app_keys.app_id: [[T + DAY, 1]]
    }
    await post_accepted(client, app_keys, [event(timestamp=T + 5, response_us=7)])
    body = await get(client, app_keys, path, {"granularity": "day", "aggregation": "sum"})
    assert body["groups"] == {app_keys.app_id: [[T, 7], [T + DAY, 1500]]}


SOURCES = [
    pytest.param(f"{T}/{T + DAY}", {"granularity": "hour"}, "events_1h_app", id="hourly_aligned"),
    pytest.param(
        f"{T}/{T + DAY}",
        {"granularity": "hour", "group": "status_code"},
        "events_1h",
        id="hourly_by_status_wide_hour",
    ),
    pytest.param(
        f"{T}/{T + DAY}",
        {"granularity": "hour", "group": "consumer_id"},
        "events_1h_consumer",
        id="hourly_by_consumer",
    ),
    pytest.param(f"{T}/{T + HOUR}", {"granularity": "minute"}, "events_1m_app", id="minutely"),
    pytest.param(
        f"{T}/{T + HOUR}",
        {"granularity": "minute", "group": "method"},
        "events_1m",
        id="minutely_by_method_wide_minute",
    ),
    pytest.param(
        f"{T + 30}/{T + 2 * HOUR}", {}, "events_1h_app,events_1m_app,events", id="ragged_start"
    ),
    pytest.param(f"{T}/{T + DAY}", {"group": "url"}, "events", id="group_url"),
    pytest.param(f"{T}/{T + DAY}", {"aggregation": "percentile_95"}, "events", id="percentile"),
]


@pytest.mark.parametrize(("path", "params", "sources"), SOURCES)
async def test_sources_header_and_metric(
    client: TestClient,
    app_keys: NewApp,
    db: asyncpg.Connection,
    path: str,
    params: dict[str, str],
    sources: str,
) -> None:
    await post_accepted(client, app_keys, [event(timestamp=T + 30 + 61 * i) for i in range(100)])
    # Nothing pending: the rollups answer what they cover.
    await catch_up(db)
    resp = await client.get(f"/1/timeseries/{path}", params=params, headers=read_headers(app_keys))
    assert resp.status == 200, await resp.text()
    assert resp.headers["X-Apinalytics-Sources"] == sources
    metrics = await (await client.get("/metrics")).text()
    for source in sources.split(","):
        assert f'apinalytics_query_source_total{{source="{source}"}} 1.0' in metrics


async def test_force_raw_gives_the_same_answer(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    await post_accepted(
        client, app_keys, [event(timestamp=T + 7 * i, response_us=i) for i in range(2000)]
    )
    await catch_up(db)
    path = f"/1/timeseries/{T + 30}/{T + 3 * HOUR + 30}"
    params = {"granularity": "hour", "aggregation": "mean", "group": "function"}
    planned = await client.get(path, params=params, headers=read_headers(app_keys))
    raw = await client.get(
        path, params=params, headers={**read_headers(app_keys), "X-Apinalytics-Planner": "raw"}
    )
    assert planned.headers["X-Apinalytics-Sources"] == "events_1h_function,events_1m,events"
    assert raw.headers["X-Apinalytics-Sources"] == "events"
    assert await planned.json() == await raw.json()


async def test_parallel_workers_for_raw_reads_only(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    """The API pool's connections plan serially; a raw read takes the server's workers
    back for its own transaction and leaves the connection serial."""
    name = await db.fetchval("SELECT current_database()")
    await db.execute(f'ALTER DATABASE "{name}" SET max_parallel_workers_per_gather = 3')
    await client.app[DB].pool.expire_connections()  # so they connect under that setting
    await post_accepted(client, app_keys, [event(timestamp=T + 7 * i) for i in range(100)])
    path = f"/1/timeseries/{T}/{T + HOUR}"
    raw = {**read_headers(app_keys), "X-Apinalytics-Planner": "raw"}
    for headers in (read_headers(app_keys), raw):
        resp = await client.get(path, params={"granularity": "minute"}, headers=headers)
        assert resp.status == 200, await resp.text()
    async with client.app[DB].pool.acquire() as conn:
        assert await conn.fetchval("SHOW max_parallel_workers_per_gather") == "0"
        async with conn.transaction():
            await conn.execute("SET LOCAL max_parallel_workers_per_gather TO DEFAULT")
            assert await conn.fetchval("SHOW max_parallel_workers_per_gather") == "3"
        assert await conn.fetchval("SHOW max_parallel_workers_per_gather") == "0"


BAD = [
    pytest.param("x/10", {}, "start", id="start_not_a_number"),
    pytest.param("10/y", {}, "end", id="end_not_a_number"),
    pytest.param("10/10", {}, "end", id="empty_range"),
    pytest.param("10/5", {}, "end", id="end_before_start"),
    pytest.param("10.5/20", {}, "start", id="fractional_start"),
    pytest.param("0/10", {"value": "status_code"}, "value", id="unknown_value"),
    pytest.param("0/10", {"granularity": "month"}, "granularity", id="unknown_granularity"),
    pytest.param("0/10", {"granularity": "0"}, "granularity", id="zero_granularity"),
    pytest.param("0/10", {"granularity": "-5"}, "granularity", id="negative_granularity"),
    pytest.param("0/10", {"aggregation": "median"}, "aggregation", id="unknown_aggregation"),
    pytest.param("0/10", {"aggregation": "percentile_100"}, "aggregation", id="percentile_100"),
    pytest.param("0/10", {"aggregation": "percentile_0"}, "aggregation", id="percentile_0"),
    pytest.param("0/10", {"group": "colour"}, "group", id="unknown_group"),
    pytest.param("0/10", {"include": "colour:red"}, "include", id="unknown_include_field"),
    pytest.param("0/10", {"include": "function"}, "include", id="include_without_colon"),
    pytest.param("0/10", {"include": "status_code:ok"}, "include", id="include_status_not_int"),
    pytest.param("0/10", {"include": "consumer_id:\x00"}, "include", id="include_nul"),
    pytest.param("0/10", {"include": "data.\x00:x"}, "include", id="include_data_key_nul"),
    pytest.param("0/10", {"group": "data.\x00"}, "group", id="group_data_key_nul"),
    pytest.param("0/10", {"granularity": "9" * 20}, "granularity", id="huge_granularity"),
    pytest.param("0/1001", {"granularity": "1"}, "granularity", id="one_bucket_over_max"),
    pytest.param(
        "0/10", [("aggregation", "sum"), ("aggregation", "max")], "aggregation", id="twice"
    ),
]


@pytest.mark.parametrize(("path", "params", "param"), BAD)
async def test_bad_parameters(
    client: TestClient, app_keys: NewApp, path: str, params: Any, param: str
) -> None:
    resp = await client.get(f"/1/timeseries/{path}", params=params, headers=read_headers(app_keys))
    err = await assert_error(resp, 400, "invalid_parameter", param)
    assert err["details"][0]["param"] == param


async def test_max_buckets_boundary(client: TestClient, app_keys: NewApp) -> None:
    await get(client, app_keys, "/1/timeseries/0/1000", {"granularity": "1"})


async def test_bad_planner_header(client: TestClient, app_keys: NewApp) -> None:
    resp = await client.get(
        "/1/timeseries/0/10", headers={**read_headers(app_keys), "X-Apinalytics-Planner": "fast"}
    )
    await assert_error(resp, 400, "invalid_parameter", "X-Apinalytics-Planner")


async def test_auth(client: TestClient, app_keys: NewApp) -> None:
    path = "/1/timeseries/0/10"
    await assert_error(await client.get(path), 401, "unauthorized")
    await assert_error(await client.get(path, headers=write_headers(app_keys)), 403, "forbidden")


async def test_other_apps_data_is_invisible(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    from apinalytics import apps

    other = await apps.create(db, "other")
    await post_accepted(client, other, [event(timestamp=T + 1)])
    body = await get(client, app_keys, f"/1/timeseries/{T}/{T + DAY}", {"group": "function"})
    assert body["groups"] == {}


async def test_statement_timeout(
    make_client: Any, settings: Settings, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    client: TestClient = await make_client(settings.model_copy(update={"statement_timeout_s": 0.2}))
    # A lock held elsewhere stands in for a slow query: the statement waits on it
    # until the server cancels it.
    async with db.transaction():
        await db.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        resp = await client.get(
            f"/1/timeseries/{T}/{T + 1}",
            headers={**read_headers(app_keys), "X-Apinalytics-Planner": "raw"},
        )
        await assert_error(resp, 503, "query_timeout", "statement timeout")


PAST_RAW = [
    pytest.param({"aggregation": "percentile_95"}, id="percentile"),
    pytest.param({"group": "url"}, id="group_url"),
    pytest.param({"include": "url:/v1/things?id=7"}, id="include_url"),
    pytest.param({"granularity": "30"}, id="sub_minute_granularity"),
]


@pytest.mark.parametrize("params", PAST_RAW)
async def test_past_raw_retention_is_gone(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection, params: dict[str, str]
) -> None:
    await post_accepted(client, app_keys, [event(timestamp=T + 5)])
    # Raw events are kept a week: the horizon moves, whether or not chunks were dropped.
    await db.execute("UPDATE retention SET keep_s = $1 WHERE relation = 'events'", WEEK)
    resp = await client.get(
        f"/1/timeseries/{T}/{T + HOUR}", params=params, headers=read_headers(app_keys)
    )
    await assert_error(resp, 410, "past_retention", "raw data for that period is past retention")


async def test_past_raw_retention_answered_from_rollups(
    client: TestClient, app_keys: NewApp, db: asyncpg.Connection
) -> None:
    await post_accepted(
        client, app_keys, [event(timestamp=T + 5 + 60 * i, response_us=i) for i in range(90)]
    )
    await catch_up(db)
    await db.execute("UPDATE retention SET keep_s = $1 WHERE relation = 'events'", WEEK)
    path = f"/1/timeseries/{T}/{T + 2 * HOUR}"
    resp = await client.get(
        path, params={"granularity": "hour", "aggregation": "sum"}, headers=read_headers(app_keys)
    )
    assert resp.status == 200, await resp.text()
    assert resp.headers["X-Apinalytics-Sources"] == "events_1h_app"
    assert (await resp.json())["groups"] == {
        app_keys.app_id: [[T, sum(range(60))], [T + HOUR, sum(range(60, 90))]]
    }
    resp = await client.get(
        f"/1/timeseries/{T}/{T + 90}",
        params={"granularity": "minute"},
        headers=read_headers(app_keys),
    )
    await assert_error(resp, 410, "past_retention")
