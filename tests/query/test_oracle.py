"""Every answer equals a brute-force computation over the raw events (SPEC "Querying").

Random events — on minute, hour and day boundaries, with fractional seconds — go
through the real ``POST /1/events/`` (the service's materializer running), and random
queries (aligned and ragged ranges, every aggregation and kind of granularity,
groups, includes) must give what ``oracle.answer`` computes, in every rollup mode.
Each example uses a fresh application on the one client of the test.
"""

from __future__ import annotations

import asyncpg
import hypothesis
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apinalytics import apps
from apinalytics.settings import Settings

from ..conftest import ALL_MODES, MakeSettings
from ..helpers import catch_up, post_accepted, read_headers
from . import oracle
from .oracle import BASE, CONSUMERS, DAY, FUNCTIONS, METHODS, STATUSES, Ev, Q

EXAMPLES = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# Named apart from hypothesis.settings, imported above.
@pytest.fixture(name="settings")
def oracle_settings(make_settings: MakeSettings) -> Settings:
    # The examples' events are in August 2025, and a second-granularity query over
    # their three days has 260 000 buckets.
    return make_settings(max_event_age_s=20 * 366 * 86400, max_buckets=1_000_000)


async def check(client: TestClient, app: apps.NewApp, evs: list[Ev], qs: list[Q]) -> None:
    for q in qs:
        resp = await client.get(
            f"/1/timeseries/{q.start}/{q.end}/", params=q.params(), headers=read_headers(app)
        )
        assert resp.status == 200, (q, await resp.text())
        body = await resp.json()
        hypothesis.event(f"read {resp.headers['X-Apinalytics-Sources']}")
        width, _ = oracle.width_origin(q.granularity, q.start, q.end)
        assert (body["start"], body["end"], body["granularity"]) == (q.start, q.end, width * 1000)
        oracle.assert_same(body["groups"], oracle.answer(evs, q, app.app_id), q)


@pytest.mark.parametrize("mode", ALL_MODES, indirect=True)
@EXAMPLES
@given(case=oracle.scenarios())
async def test_answers_equal_the_oracle(
    client: TestClient, db: asyncpg.Connection, case: oracle.Scenario
) -> None:
    app = await apps.create(db, "oracle")
    await post_accepted(client, app, [e.body() for e in case.events])
    await check(client, app, case.events, case.queries)


@pytest.mark.parametrize("mode", ALL_MODES, indirect=True)
@EXAMPLES
@given(case=oracle.scenarios(min_events=1, max_queries=3), batches=st.integers(2, 4))
async def test_back_dated_events_are_read_at_once(
    client: TestClient, db: asyncpg.Connection, case: oracle.Scenario, batches: int
) -> None:
    """Newest events first, older ones in later batches; every answer after each batch."""
    app = await apps.create(db, "oracle")
    newest_first = sorted(case.events, key=lambda e: e.us, reverse=True)
    size = -(-len(newest_first) // batches)
    sent: list[Ev] = []
    for i in range(0, len(newest_first), size):
        batch = newest_first[i : i + size]
        await post_accepted(client, app, [e.body() for e in batch])
        sent.extend(batch)
        await check(client, app, sent, case.queries)


# Queries the narrow hour rollups answer (ungrouped; by function; by consumer), with
# ragged edges too; each names the hour rollup its whole hours must come from.
NARROW_QUERIES = [
    (Q(BASE, BASE + 2 * DAY, "day", "count", "", ()), "events_1h_app"),
    (Q(BASE - 3600, BASE + DAY, "hour", "mean", "", ()), "events_1h_app"),
    (Q(BASE + 90, BASE + DAY + 1830, "", "max", "", ()), "events_1h_app"),
    (Q(BASE, BASE + 2 * DAY, "hour", "count", "function", ()), "events_1h_function"),
    (Q(BASE, BASE + DAY, "7200", "sum", "", (("function", "list"),)), "events_1h_function"),
    (Q(BASE + 30, BASE + 3 * DAY, "", "min", "consumer_id", ()), "events_1h_consumer"),
    (
        Q(BASE, BASE + DAY, "hour", "mean", "consumer_id", (("consumer_id", "bob"),)),
        "events_1h_consumer",
    ),
    (Q(BASE, BASE + DAY, "hour", "count", "function", (("method", "get"),)), "events_1h"),
]


@pytest.mark.parametrize("mode", ALL_MODES, indirect=True)
async def test_narrow_hour_rollups_answer_what_they_cover(
    client: TestClient, db: asyncpg.Connection
) -> None:
    """A fixed scenario whose queries the narrow hour rollups serve: the answers equal
    the oracle's and the sources header names the rollup the planner picked."""
    app = await apps.create(db, "oracle")
    evs = [
        Ev(
            timestamp=BASE - 3600 + i * 997.25,
            consumer_id=CONSUMERS[i % 3],
            method=METHODS[i % 2],
            url="/a",
            function=FUNCTIONS[i % 3 - 1],
            response_us=1000 + 37 * i,
            status_code=STATUSES[i % 3],
            data=None,
        )
        for i in range(300)
    ]
    await post_accepted(client, app, [e.body() for e in evs])
    # Nothing pending, so the rollups answer every whole hour.
    await catch_up(db)
    for q, source in NARROW_QUERIES:
        resp = await client.get(
            f"/1/timeseries/{q.start}/{q.end}/", params=q.params(), headers=read_headers(app)
        )
        assert resp.status == 200, (q, await resp.text())
        assert source in resp.headers["X-Apinalytics-Sources"].split(","), q
        oracle.assert_same((await resp.json())["groups"], oracle.answer(evs, q, app.app_id), q)
