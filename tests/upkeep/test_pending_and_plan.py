"""Pending stretches, pure: how a batch's times become rows, and how the planner reads
an app's pending stretches from raw events (``rollups.pending``, ``query.planner``)."""

from __future__ import annotations

import itertools
import random

import pytest

from apinalytics.errors import Gone
from apinalytics.query import planner
from apinalytics.query.model import Query
from apinalytics.query.params import parse_query
from apinalytics.rollups import RAW, pending

H = 3600
US = 1_000_000
NOW = 1_780_000_000 // H * H


def test_live_traffic_is_one_stretch() -> None:
    times = [(NOW + 100 + i * 0.5) * US for i in range(1000)]
    assert pending.stretches(int(t) for t in times) == [(NOW, NOW + H)]


def test_a_batch_across_an_hour_boundary_is_one_stretch() -> None:
    times = [(NOW - 10) * US, (NOW + 10) * US]
    assert pending.stretches(times) == [(NOW - H, NOW + H)]


def test_a_scattered_batch_is_a_few_stretches_covering_every_event() -> None:
    rng = random.Random(7)
    times = [int((NOW - rng.uniform(0, 30 * 86400)) * US) for _ in range(1000)]
    got = pending.stretches(times)
    assert 1 <= len(got) <= pending.MAX_STRETCHES
    assert all(s % H == 0 and e % H == 0 and s < e for s, e in got)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(got)), "disjoint, sorted"
    for t in times:
        assert any(s * US <= t < e * US for s, e in got)


@pytest.mark.parametrize(
    ("ranges", "limit", "want"),
    [
        pytest.param([], None, [], id="none"),
        pytest.param([(0, 2), (2, 3)], None, [(0, 3)], id="adjacent"),
        pytest.param([(4, 6), (0, 5)], None, [(0, 6)], id="overlapping_unsorted"),
        pytest.param([(0, 1), (3, 4), (10, 11)], 2, [(0, 4), (10, 11)], id="smallest_gap"),
    ],
)
def test_join(
    ranges: list[tuple[int, int]], limit: int | None, want: list[tuple[int, int]]
) -> None:
    assert pending.join(ranges, limit) == want


def query(start: int, end: int, granularity: str = "hour", group: str = "") -> Query:
    params = {"granularity": [granularity], "aggregation": ["count"]}
    if group:
        params["group"] = [group]
    return parse_query(str(start), str(end), params, max_buckets=100_000)


def test_without_pending_stretches_the_rollups_answer() -> None:
    got = planner.plan(query(NOW - 10 * H, NOW), NOW, {})
    assert [p.source for p in got.parts] == ["events_1h_app"]


def test_a_pending_stretch_is_read_from_raw_events_the_rest_from_rollups() -> None:
    got = planner.plan(query(NOW - 10 * H, NOW), NOW, {}, pending=[(NOW - 4 * H, NOW - 3 * H)])
    assert [(p.source, p.start, p.end) for p in got.parts] == [
        ("events_1h_app", NOW - 10 * H, NOW - 4 * H),
        (RAW, NOW - 4 * H, NOW - 3 * H),
        ("events_1h_app", NOW - 3 * H, NOW),
    ]
    assert got.sources == ("events_1h_app", RAW)


def test_pending_stretches_are_clipped_to_the_range_and_joined_with_raw_edges() -> None:
    # A ragged start: its minute edge goes to the minute rollup, unless pending.
    got = planner.plan(
        query(NOW - 10 * H + 30, NOW, granularity=""),
        NOW,
        {},
        pending=[(NOW - 20 * H, NOW - 9 * H), (NOW - 9 * H, NOW - 8 * H), (NOW - H, NOW + H)],
    )
    assert [(p.source, p.start, p.end) for p in got.parts] == [
        (RAW, NOW - 10 * H + 30, NOW - 8 * H),
        ("events_1h_app", NOW - 8 * H, NOW - H),
        (RAW, NOW - H, NOW),
    ]


def test_a_pending_stretch_below_the_raw_horizon_is_left_to_the_rollups() -> None:
    """Raw events are gone there: the rollups are all there is (retention refused the
    events at ingest, so nothing pending can be lost there)."""
    horizons = {RAW: float(NOW - 5 * H)}
    got = planner.plan(
        query(NOW - 10 * H, NOW), NOW, horizons, pending=[(NOW - 6 * H, NOW - 4 * H)]
    )
    assert [(p.source, p.start, p.end) for p in got.parts] == [
        ("events_1h_app", NOW - 10 * H, NOW - 5 * H),
        (RAW, NOW - 5 * H, NOW - 4 * H),
        ("events_1h_app", NOW - 4 * H, NOW),
    ]


def test_raw_only_queries_are_unchanged_by_pending_stretches() -> None:
    q = query(NOW - 10 * H, NOW, granularity="second")
    got = planner.plan(q, NOW, {}, pending=[(NOW - 4 * H, NOW - 3 * H)])
    assert [(p.source, p.start, p.end) for p in got.parts] == [(RAW, NOW - 10 * H, NOW)]
    with pytest.raises(Gone):
        planner.plan(q, NOW, {RAW: float(NOW - H)}, pending=[(NOW - 4 * H, NOW - 3 * H)])
