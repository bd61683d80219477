"""Latency histograms and approximate answers (SPEC "Querying", docs/querying.md).

``precision=approximate`` reads percentiles and Apdex from the histogram rollups
(raw events binned alike for ragged edges). Every approximate value is checked
against the brute-force exact one: a percentile within the documented relative error,
an Apdex between the exact Apdex at the threshold divided by (1 + error) and by
(1 - error). An answer without ``precision`` is the exact one, byte for byte what it
always was.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
import hypothesis
import orjson
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apinalytics import apps
from apinalytics.ingest.model import MAX_RESPONSE_US
from apinalytics.measures import HISTOGRAM
from apinalytics.settings import Settings

from ..conftest import ALL_MODES, MakeSettings
from ..helpers import assert_error, catch_up, histogram_bin, post_accepted, read_headers
from . import oracle
from .oracle import BASE, DAY, Ev, Q

BOUND = HISTOGRAM.relative_error
HOUR = 3600
HIST_SOURCES = {"events_1h_app_hist", "events_1h_function_hist"}

EXAMPLES = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(name="settings")
def histogram_settings(make_settings: MakeSettings) -> Settings:
    return make_settings(max_event_age_s=20 * 366 * 86400, max_buckets=1_000_000)


def ev(t: float, response_us: int, function: str = "list", status: int = 200) -> Ev:
    return Ev(t, "alice", "GET", "/a", function, response_us, status, None)


async def get(client: TestClient, app: apps.NewApp, q: Q) -> tuple[int, dict[str, Any], bytes, str]:
    resp = await client.get(
        f"/1/timeseries/{q.start}/{q.end}/", params=q.params(), headers=read_headers(app)
    )
    raw = await resp.read()
    sources = resp.headers.get("X-Apinalytics-Sources", "")
    return resp.status, orjson.loads(raw), raw, sources


def assert_within(got: dict[str, Any], evs: list[Ev], q: Q, app_id: str) -> None:
    """Same groups and buckets as the exact answer; each value within the bound."""
    exact = oracle.answer(evs, q, app_id)
    assert set(got) == set(exact), (q, got, exact)
    if q.aggregation.startswith("apdex_"):
        t = int(q.aggregation.removeprefix("apdex_")) * 1000
        low = oracle.answer(
            evs, q, app_id, lambda c: oracle.apdex([e.response_us for e in c], t / (1 + BOUND))
        )
        high = oracle.answer(
            evs, q, app_id, lambda c: oracle.apdex([e.response_us for e in c], t / (1 - BOUND))
        )
    for key, series in exact.items():
        assert [b for b, _ in got[key]] == [b for b, _ in series], (q, key)
        for i, ((_, gv), (_, wv)) in enumerate(zip(got[key], series, strict=True)):
            if q.aggregation.startswith("apdex_"):
                lo, hi = low[key][i][1], high[key][i][1]
                assert lo - 1e-12 <= gv <= hi + 1e-12, (q, key, gv, lo, wv, hi)
            else:
                assert abs(gv - wv) <= BOUND * abs(wv) + 1e-9, (q, key, gv, wv)


async def check_approximate(client: TestClient, app: apps.NewApp, evs: list[Ev], q: Q) -> None:
    status, body, _, sources = await get(client, app, replace(q, precision="approximate"))
    assert status == 200, (q, body)
    hypothesis.event(f"read {sources}")
    if HIST_SOURCES & set(sources.split(",")):
        assert body["precision"] == {"relative_error": BOUND}, q
        assert_within(body["groups"], evs, q, app.app_id)
    else:
        # No histogram answers any part: the exact answer, which says nothing.
        assert "precision" not in body, (q, sources)
        oracle.assert_same(body["groups"], oracle.answer(evs, q, app.app_id), q)


@st.composite
def approximate_queries(draw: st.DrawFn, near: list[int]) -> Q:
    """Percentiles and Apdex over ranges aligned to hours or not, grouped by what the
    histograms hold (or not, then read from raw events)."""
    q = draw(oracle.queries(near))
    aggregation = draw(
        st.one_of(
            st.integers(1, 999).map(oracle.percentile_name),
            st.sampled_from([f"apdex_{t}" for t in oracle.APDEX_MS]),
        )
    )
    granularity = draw(st.sampled_from(["", "", "hour", "day", "7200", "week", "minute"]))
    group = draw(st.sampled_from(["", "", "function", "status_class"]))
    includes = draw(st.sampled_from([(), (), (("function", "list"),), (("status_code", "5xx"),)]))
    if draw(st.booleans()):
        # Whole hours: the histograms answer all of it.
        start = q.start // HOUR * HOUR
        q = replace(q, start=start, end=max(start + HOUR, -(-q.end // HOUR) * HOUR))
    return replace(
        q, aggregation=aggregation, granularity=granularity, group=group, includes=includes
    )


@st.composite
def approximate_scenarios(draw: st.DrawFn) -> oracle.Scenario:
    base = draw(oracle.scenarios(min_events=1, max_queries=1))
    near = [int(e.timestamp) - BASE for e in base.events]
    qs = draw(st.lists(approximate_queries(near), min_size=1, max_size=4))
    return oracle.Scenario(base.events, qs)


@pytest.mark.parametrize("mode", ALL_MODES, indirect=True)
@EXAMPLES
@given(case=approximate_scenarios())
async def test_approximate_answers_are_within_the_bound(
    client: TestClient, db: asyncpg.Connection, case: oracle.Scenario
) -> None:
    app = await apps.create(db, "approximate")
    await post_accepted(client, app, [e.body() for e in case.events])
    # Nothing pending: the rollups answer what they cover.
    await catch_up(db)
    for q in case.queries:
        await check_approximate(client, app, case.events, q)


# Values on and beside bin boundaries (1.02**k rounded both ways), 0, 1, small
# integers (bins narrower than 1) and the largest response_us.
BOUNDARY_VALUES = sorted(
    {0, 1, 2, 3, 49, 50, 51, MAX_RESPONSE_US, MAX_RESPONSE_US - 1}
    | {math.floor(1.02**k) for k in range(1, 1273, 37)}
    | {math.ceil(1.02**k) for k in range(1, 1273, 37)}
)


@pytest.mark.parametrize("mode", ALL_MODES, indirect=True)
async def test_bin_boundaries(client: TestClient, db: asyncpg.Connection) -> None:
    """One value per hour: its bin is the one the definition gives, and the
    approximate median of its hour (its bin's representative) is within the bound;
    0 is answered as 0."""
    assert MAX_RESPONSE_US == 86_400_000_000
    app = await apps.create(db, "boundaries")
    evs = [ev(BASE + i * HOUR + 17.5, v) for i, v in enumerate(BOUNDARY_VALUES)]
    await post_accepted(client, app, [e.body() for e in evs])
    # Nothing pending: the rollups answer what they cover.
    await catch_up(db)
    app_id = await db.fetchval("SELECT id FROM apps WHERE public_id = $1", app.app_id)
    rows = await db.fetch(
        "SELECT bucket, bin, calls FROM events_1h_app_hist WHERE app_id = $1 ORDER BY bucket",
        app_id,
    )
    assert [(r["bin"], r["calls"]) for r in rows] == [
        (histogram_bin(v), 1) for v in BOUNDARY_VALUES
    ]
    assert histogram_bin(MAX_RESPONSE_US) == 1272
    for e in evs:
        lo = 1.02 ** (histogram_bin(e.response_us) - 1)
        assert e.response_us == 0 or lo * (1 - 1e-12) <= e.response_us < lo * 1.02 * (1 + 1e-12)
    q = Q(BASE, BASE + len(evs) * HOUR, "hour", "percentile_50", "", (), "approximate")
    status, body, _, sources = await get(client, app, q)
    assert status == 200 and sources == "events_1h_app_hist", (body, sources)
    assert body["precision"] == {"relative_error": BOUND}
    got = body["groups"][app.app_id]
    assert [b for b, _ in got] == [BASE + i * HOUR for i in range(len(evs))]
    for (_, value), e in zip(got, evs, strict=True):
        assert abs(value - e.response_us) <= BOUND * e.response_us, (value, e.response_us)
        if e.response_us == 0:
            assert value == 0


@pytest.mark.parametrize("mode", ALL_MODES, indirect=True)
async def test_minute_histograms_merge_into_the_hour(
    client: TestClient, db: asyncpg.Connection
) -> None:
    """Histograms per minute, computed from raw events, summed into hours equal the
    hour histograms the rollups hold, per app and per function (summed over functions
    too)."""
    app = await apps.create(db, "merge")
    evs = [
        ev(BASE + i * 37.3, (i * 7919) % 50_000 + (i % 5) * 1_000_000, ("", "list", "show")[i % 3])
        for i in range(400)
    ]
    await post_accepted(client, app, [e.body() for e in evs])
    # Nothing pending: the rollups answer what they cover.
    await catch_up(db)
    app_id = await db.fetchval("SELECT id FROM apps WHERE public_id = $1", app.app_id)
    minutes = await db.fetch(
        f"""
        SELECT time_bucket(INTERVAL '1 minute', time) AS minute, function,
               {HISTOGRAM.bin_of("response_us")} AS bin, count(*) AS n
        FROM events WHERE app_id = $1 GROUP BY 1, 2, 3
        """,
        app_id,
    )
    per_function: Counter[tuple[datetime, str, int]] = Counter()
    per_app: Counter[tuple[datetime, int]] = Counter()
    for r in minutes:
        hour = datetime.fromtimestamp(r["minute"].timestamp() // HOUR * HOUR, UTC)
        per_function[(hour, r["function"], r["bin"])] += r["n"]
        per_app[(hour, r["bin"])] += r["n"]
    held_function = await db.fetch(
        "SELECT bucket, function, bin, calls FROM events_1h_function_hist WHERE app_id = $1",
        app_id,
    )
    held_app = await db.fetch(
        "SELECT bucket, bin, calls FROM events_1h_app_hist WHERE app_id = $1", app_id
    )
    assert {(r["bucket"], r["function"], r["bin"]): r["calls"] for r in held_function} == dict(
        per_function
    )
    assert {(r["bucket"], r["bin"]): r["calls"] for r in held_app} == dict(per_app)
    summed: defaultdict[tuple[datetime, int], int] = defaultdict(int)
    for r in held_function:
        summed[(r["bucket"], r["bin"])] += r["calls"]
    assert dict(summed) == dict(per_app)
    # And binned in Python, apart from the service's SQL.
    in_python = Counter(
        (
            datetime.fromtimestamp(e.us // 1_000_000 // HOUR * HOUR, UTC),
            histogram_bin(e.response_us),
        )
        for e in evs
    )
    assert dict(in_python) == dict(per_app)


@pytest.mark.parametrize("mode", ALL_MODES, indirect=True)
async def test_answers_without_precision_are_unchanged(
    client: TestClient, db: asyncpg.Connection
) -> None:
    """Without ``precision`` (or with ``precision=exact``) the body is exactly the one
    the service always gave: groups, start, end, granularity, in that order, the
    exact values, no ``precision``."""
    app = await apps.create(db, "old clients")
    evs = [
        ev(BASE + i * 611.5, 1000 + 13 * i, ("list", "show")[i % 2], (200, 503)[i % 3 == 0])
        for i in range(200)
    ]
    await post_accepted(client, app, [e.body() for e in evs])
    # Nothing pending: the rollups answer what they cover.
    await catch_up(db)
    for q in (
        Q(BASE, BASE + DAY, "hour", "percentile_95", "function", ()),
        Q(BASE + 100, BASE + DAY, "", "percentile_50", "", ()),
        Q(BASE, BASE + DAY, "hour", "mean", "", ()),
        Q(BASE, BASE + DAY, "day", "count", "function", ()),
    ):
        status, body, raw, _ = await get(client, app, q)
        assert status == 200
        expected = {
            "groups": oracle.answer(evs, q, app.app_id),
            "start": q.start,
            "end": q.end,
            "granularity": oracle.width_origin(q.granularity, q.start, q.end)[0] * 1000,
        }
        assert list(body) == ["groups", "start", "end", "granularity"]
        oracle.assert_same(body["groups"], expected["groups"], q)
        assert raw == orjson.dumps(
            {**body, "groups": {g: [tuple(p) for p in s] for g, s in body["groups"].items()}}
        )
        _, _, raw_exact, _ = await get(client, app, replace(q, precision="exact"))
        assert raw_exact == raw
        # precision=approximate of an aggregation the rollups answer exactly: exact.
        if q.aggregation in ("mean", "count"):
            _, _, raw_approx, _ = await get(client, app, replace(q, precision="approximate"))
            assert raw_approx == raw


@pytest.mark.parametrize("mode", ALL_MODES, indirect=True)
async def test_past_raw_retention_approximate_answers_what_exact_cannot(
    client: TestClient, db: asyncpg.Connection
) -> None:
    """Raw events before their horizon: an exact percentile is a 410 that names
    precision=approximate, which answers whole hours from the histograms."""
    app = await apps.create(db, "retention")
    evs = [ev(BASE + i * 97.0, 500 + (i * 7919) % 20_000) for i in range(300)]
    await post_accepted(client, app, [e.body() for e in evs])
    # Nothing pending: the rollups answer what they cover.
    await catch_up(db)
    await db.execute(
        "UPDATE retention SET dropped_before = $1 WHERE relation = 'events'",
        datetime.fromtimestamp(BASE + DAY, UTC),
    )
    q = Q(BASE, BASE + 8 * HOUR, "hour", "percentile_99.9", "function", ())
    status, body, _, _ = await get(client, app, q)
    assert status == 410, body
    assert "precision=approximate" in body["error"]["message"], body
    for aggregation in ("percentile_99.9", "percentile_50", "apdex_5"):
        approx = replace(q, aggregation=aggregation, precision="approximate")
        status, body, _, sources = await get(client, app, approx)
        assert status == 200, body
        assert sources == "events_1h_function_hist"
        assert body["precision"] == {"relative_error": BOUND}
        assert_within(body["groups"], evs, approx, app.app_id)
    # A ragged edge there still needs raw events: 410.
    status, _, _, _ = await get(client, app, replace(q, start=BASE + 60, precision="approximate"))
    assert status == 410


@pytest.mark.parametrize("mode", ALL_MODES, indirect=True)
async def test_error_rate_and_status_classes_come_from_the_rollups(
    client: TestClient, db: asyncpg.Connection
) -> None:
    app = await apps.create(db, "status")
    statuses = (200, 201, 302, 404, 500, 503, 599, 101)
    evs = [
        ev(BASE + i * 131.0, 1000 + i, ("list", "show")[i % 2], statuses[i % 8]) for i in range(400)
    ]
    await post_accepted(client, app, [e.body() for e in evs])
    # Nothing pending: the rollups answer what they cover.
    await catch_up(db)
    for q in (
        Q(BASE, BASE + DAY, "hour", "error_rate", "", ()),
        Q(BASE, BASE + DAY, "", "error_rate", "function", ()),
        Q(BASE, BASE + DAY, "hour", "count", "status_class", ()),
        Q(
            BASE,
            BASE + DAY,
            "day",
            "mean",
            "function",
            (("status_code", "5xx"), ("status_code", "101")),
        ),
        Q(BASE, BASE + DAY, "hour", "error_rate", "status_class", (("status_code", "4XX"),)),
    ):
        status, body, _, sources = await get(client, app, q)
        assert status == 200, (q, body)
        assert sources == "events_1h", (q, sources)
        oracle.assert_same(body["groups"], oracle.answer(evs, q, app.app_id), q)
    rates = body["groups"]
    assert set(rates) == {"4xx"} and all(v == 0.0 for _, v in rates["4xx"])


@pytest.mark.parametrize(
    ("params", "mentions"),
    [
        ({"aggregation": "percentile_0.0"}, "percentile_X"),
        ({"aggregation": "percentile_100"}, "percentile_X"),
        ({"aggregation": "percentile_99.95"}, "percentile_X"),
        ({"aggregation": "apdex_0"}, "apdex_T"),
        ({"aggregation": "apdex_86400001"}, "apdex_T"),
        ({"precision": "rough"}, "precision"),
        ({"include": "status_code:6xx"}, "status_code"),
        ({"include": "status_class:5xx"}, "status_class"),
    ],
)
async def test_bad_new_parameters_are_400(
    client: TestClient, app_keys: apps.NewApp, params: dict[str, str], mentions: str
) -> None:
    resp = await client.get(
        f"/1/timeseries/{BASE}/{BASE + DAY}/", params=params, headers=read_headers(app_keys)
    )
    await assert_error(resp, 400, None, mentions)
