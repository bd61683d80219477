"""The planner, on a frozen clock: which relation answers which part of the range.

The boundary cases run on the two wide rollups (every dimension, minute and hour), so
they describe how widths and edges are tiled; ``DECLARED`` runs on the rollups as
declared, narrow hour ones included, and pins which one each common query reads.
Every case names its boundary. ``T`` is a Monday 00:00 UTC, so it is on a minute,
hour, day and week boundary at once.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from apinalytics.errors import Gone
from apinalytics.query.model import (
    DAY,
    HOUR,
    MINUTE,
    WEEK,
    WEEK_ORIGIN,
    Aggregation,
    Granularity,
    Kind,
    Query,
    granularity_of,
)
from apinalytics.query.planner import Part, Plan, plan
from apinalytics.rollups import DIMENSIONS, RAW, ROLLUPS, Rollup

T = WEEK_ORIGIN + 2800 * WEEK  # 2023-09-04, a Monday
NOW = float(T + 30 * DAY)
COUNT = Aggregation(Kind.COUNT)
P95 = Aggregation(Kind.PERCENTILE, 950)
H, M, R = "events_1h", "events_1m", RAW
APP, FN, CONSUMER = "events_1h_app", "events_1h_function", "events_1h_consumer"
M_APP = "events_1m_app"
WIDE = tuple(r for r in ROLLUPS if r.dimensions == DIMENSIONS)


def q(
    start: int,
    end: int,
    granularity: int | None = None,
    aggregation: Aggregation | None = None,
    group: str | None = None,
    includes: Mapping[str, tuple[str, ...]] | None = None,
) -> Query:
    return Query(
        start,
        end,
        granularity_of(granularity) if granularity else None,
        aggregation or COUNT,
        group,
        includes or {},
    )


def parts(*spec: tuple[str, int, int]) -> tuple[Part, ...]:
    return tuple(Part(s, a, b) for s, a, b in spec)


CASES = [
    pytest.param(q(T, T + 6 * HOUR, HOUR), {}, parts((H, T, T + 6 * HOUR)), id="hourly_aligned"),
    pytest.param(
        q(T + 90, T + 3 * HOUR, HOUR),
        {},
        parts((R, T + 90, T + 120), (M, T + 120, T + HOUR), (H, T + HOUR, T + 3 * HOUR)),
        id="ragged_start",
    ),
    pytest.param(
        q(T, T + 2 * HOUR + 30, HOUR),
        {},
        parts((H, T, T + 2 * HOUR), (R, T + 2 * HOUR, T + 2 * HOUR + 30)),
        id="ragged_end_within_first_minute",
    ),
    pytest.param(
        q(T + 30, T + 2 * HOUR + 90),
        {},
        parts(
            (R, T + 30, T + 60),
            (M, T + 60, T + HOUR),
            (H, T + HOUR, T + 2 * HOUR),
            (M, T + 2 * HOUR, T + 2 * HOUR + 60),
            (R, T + 2 * HOUR + 60, T + 2 * HOUR + 90),
        ),
        id="ragged_both",
    ),
    pytest.param(q(T + 10, T + 50), {}, parts((R, T + 10, T + 50)), id="inside_one_minute_raw"),
    pytest.param(
        q(T + 60, T + 59 * MINUTE),
        {},
        parts((M, T + 60, T + 59 * MINUTE)),
        id="just_short_of_an_hour_minutes",
    ),
    pytest.param(q(T, T + DAY, None, P95), {}, parts((R, T, T + DAY)), id="percentile_forces_raw"),
    pytest.param(
        q(T, T + DAY, HOUR, group="url"), {}, parts((R, T, T + DAY)), id="group_url_forces_raw"
    ),
    pytest.param(
        q(T, T + DAY, HOUR, includes={"url": ("/a",)}),
        {},
        parts((R, T, T + DAY)),
        id="include_url_forces_raw",
    ),
    pytest.param(
        q(T, T + DAY, HOUR, group="data.plan"),
        {},
        parts((R, T, T + DAY)),
        id="group_data_forces_raw",
    ),
    pytest.param(
        q(T, T + DAY, HOUR, group="status_code", includes={"function": ("f",), "method": ("GET",)}),
        {},
        parts((H, T, T + DAY)),
        id="covered_group_and_includes_hour",
    ),
    pytest.param(q(T, T + 2 * WEEK, WEEK), {}, parts((H, T, T + 2 * WEEK)), id="week_from_hours"),
    pytest.param(
        q(T - 3 * DAY, T + 4 * DAY + 1800, DAY),
        {},
        parts((H, T - 3 * DAY, T + 4 * DAY), (M, T + 4 * DAY, T + 4 * DAY + 1800)),
        id="days_with_ragged_end",
    ),
    pytest.param(
        q(T, T + 2 * HOUR, MINUTE), {}, parts((M, T, T + 2 * HOUR)), id="minute_granularity"
    ),
    pytest.param(
        q(T, T + 2 * HOUR, 120), {}, parts((M, T, T + 2 * HOUR)), id="two_minutes_from_minutes"
    ),
    pytest.param(
        q(T, T + 2 * HOUR, 2 * HOUR), {}, parts((H, T, T + 2 * HOUR)), id="two_hours_from_hours"
    ),
    pytest.param(
        q(T, T + 2 * HOUR, 1800), {}, parts((M, T, T + 2 * HOUR)), id="half_hours_from_minutes"
    ),
    pytest.param(q(T, T + 2 * HOUR, 90), {}, parts((R, T, T + 2 * HOUR)), id="ninety_seconds_raw"),
    pytest.param(
        q(T, T + 2 * HOUR, 1), {}, parts((R, T, T + 2 * HOUR)), id="seconds_granularity_raw"
    ),
    pytest.param(q(T, T + DAY), {}, parts((H, T, T + DAY)), id="whole_range_hour"),
    pytest.param(
        q(T + 1, T + DAY + 1),
        {},
        parts(
            (R, T + 1, T + 60),
            (M, T + 60, T + HOUR),
            (H, T + HOUR, T + DAY),
            (R, T + DAY, T + DAY + 1),
        ),
        id="whole_range_off_by_one_second",
    ),
    pytest.param(
        q(T, T + 2 * DAY, HOUR),
        {R: T + DAY},
        parts((H, T, T + 2 * DAY)),
        id="past_raw_retention_from_rollup",
    ),
    pytest.param(
        q(T, T + 2 * HOUR + 30, HOUR),
        {R: T + HOUR},
        parts((H, T, T + 2 * HOUR), (R, T + 2 * HOUR, T + 2 * HOUR + 30)),
        id="past_raw_retention_ragged_end_after_horizon",
    ),
    pytest.param(
        q(T, T + 2 * DAY, HOUR),
        {H: T + DAY},
        parts((M, T, T + DAY), (H, T + DAY, T + 2 * DAY)),
        id="past_hour_retention_from_minutes",
    ),
    pytest.param(
        q(T, T + 2 * DAY, HOUR),
        {H: T + DAY + 0.5},
        parts((M, T, T + DAY + HOUR), (H, T + DAY + HOUR, T + 2 * DAY)),
        id="hour_horizon_inside_a_bucket",
    ),
    pytest.param(
        q(T, T + 2 * DAY, HOUR),
        {R: None, H: None, M: None},
        parts((H, T, T + 2 * DAY)),
        id="none_horizon_is_complete",
    ),
    pytest.param(
        q(T, T + 2 * DAY, HOUR),
        {R: T},
        parts((H, T, T + 2 * DAY)),
        id="raw_horizon_exactly_at_start",
    ),
]


@pytest.mark.parametrize(("query", "horizons", "expected"), CASES)
def test_plan(
    query: Query, horizons: Mapping[str, float | None], expected: tuple[Part, ...]
) -> None:
    got = plan(query, NOW, horizons, rollups=WIDE)
    assert got.parts == expected
    # The parts tile the range exactly: nothing read twice, nothing left out.
    assert got.parts[0].start == query.start and got.parts[-1].end == query.end
    for a, b in zip(got.parts, got.parts[1:], strict=False):
        assert a.end == b.start and a.start < a.end


GONE = [
    pytest.param(q(T, T + DAY, None, P95), id="past_raw_retention_percentile_gone"),
    pytest.param(q(T, T + DAY, HOUR, group="url"), id="past_raw_retention_url_gone"),
    pytest.param(
        q(T, T + DAY, HOUR, includes={"data.plan": ("pro",)}), id="past_raw_retention_data_gone"
    ),
    pytest.param(q(T, T + DAY, 1), id="past_raw_retention_seconds_gone"),
    pytest.param(q(T + 30, T + DAY, HOUR), id="past_raw_retention_ragged_start_gone"),
]


@pytest.mark.parametrize("query", GONE)
def test_past_raw_retention_is_gone(query: Query) -> None:
    with pytest.raises(Gone) as exc:
        plan(query, NOW, {R: T + 2 * DAY})
    assert exc.value.status == 410 and exc.value.code == "past_retention"
    assert "raw data for that period is past retention" in exc.value.message


def test_raw_horizon_one_second_after_start_is_gone() -> None:
    with pytest.raises(Gone):
        plan(q(T, T + DAY, 1), NOW, {R: T + 1})


def test_force_raw() -> None:
    got = plan(q(T, T + DAY, HOUR), NOW, {}, force_raw=True)
    assert got == Plan(parts((R, T, T + DAY)), (R,))


def test_sources_coarsest_first() -> None:
    got = plan(q(T + 30, T + 2 * HOUR + 90), NOW, {}, rollups=WIDE)
    assert got.sources == (H, M, R)


NARROW = Rollup("events_fn_1h", HOUR, ("function",), "events_1m")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param(q(T, T + DAY, HOUR, group="function"), "events_fn_1h", id="narrow_covers"),
        pytest.param(q(T, T + DAY, HOUR), "events_fn_1h", id="narrow_covers_no_group"),
        pytest.param(q(T, T + DAY, HOUR, group="method"), H, id="narrow_lacks_group_field"),
        pytest.param(
            q(T, T + DAY, HOUR, group="function", includes={"status_code": ("500",)}),
            H,
            id="narrow_lacks_include_field",
        ),
    ],
)
def test_narrower_declared_rollup_is_preferred(query: Query, expected: str) -> None:
    got = plan(query, NOW, {}, rollups=(*WIDE, NARROW))
    assert got.parts == parts((expected, T, T + DAY))


def test_granularity_origin_must_align_with_rollup() -> None:
    # A made-up rollup of 7-day buckets from the epoch cannot serve Monday weeks.
    weekly = Rollup("events_7d", WEEK, ROLLUPS[0].dimensions, "events_1h")
    got = plan(q(T, T + 2 * WEEK, WEEK), NOW, {}, rollups=(*WIDE, weekly))
    assert got.sources == (H,)
    assert Granularity(WEEK, WEEK_ORIGIN).origin_s % WEEK != 0


MEAN = Aggregation(Kind.MEAN)

# The rollups as declared: the narrowest hour rollup that covers the query's group and
# include fields answers the whole hours, the narrowest minute rollup that does the
# whole minutes; edges come from the minute rollups and events.
DECLARED = [
    pytest.param(
        q(T, T + 30 * DAY, DAY), {}, parts((APP, T, T + 30 * DAY)), id="daily_count_uses_app_rollup"
    ),
    pytest.param(
        q(T, T + 7 * DAY, HOUR, group="function"),
        {},
        parts((FN, T, T + 7 * DAY)),
        id="hourly_by_function_uses_function_rollup",
    ),
    pytest.param(
        q(T, T + 7 * DAY, HOUR, MEAN, group="consumer_id"),
        {},
        parts((CONSUMER, T, T + 7 * DAY)),
        id="hourly_by_consumer_uses_consumer_rollup",
    ),
    pytest.param(
        q(T, T + 7 * DAY, HOUR, includes={"function": ("f",)}),
        {},
        parts((FN, T, T + 7 * DAY)),
        id="include_function_uses_function_rollup",
    ),
    pytest.param(
        q(T, T + 7 * DAY, HOUR, group="consumer_id", includes={"consumer_id": ("a",)}),
        {},
        parts((CONSUMER, T, T + 7 * DAY)),
        id="group_and_include_consumer_uses_consumer_rollup",
    ),
    pytest.param(
        q(T, T + 7 * DAY, HOUR, group="status_code"),
        {},
        parts((H, T, T + 7 * DAY)),
        id="group_status_code_uses_wide_hour",
    ),
    pytest.param(
        q(T, T + 7 * DAY, HOUR, group="function", includes={"method": ("GET",)}),
        {},
        parts((H, T, T + 7 * DAY)),
        id="include_method_with_group_function_uses_wide_hour",
    ),
    pytest.param(
        q(T, T + 7 * DAY, HOUR, group="function", includes={"consumer_id": ("a",)}),
        {},
        parts((H, T, T + 7 * DAY)),
        id="function_and_consumer_uses_wide_hour",
    ),
    pytest.param(
        q(T + 90, T + DAY + 1800, None),
        {},
        parts(
            (R, T + 90, T + 120),
            (M_APP, T + 120, T + HOUR),
            (APP, T + HOUR, T + DAY),
            (M_APP, T + DAY, T + DAY + 1800),
        ),
        id="ragged_edges_app_rollup_from_minutes_and_raw",
    ),
    pytest.param(
        q(T + 90, T + DAY + 1830, None, group="function"),
        {},
        parts(
            (R, T + 90, T + 120),
            (M, T + 120, T + HOUR),
            (FN, T + HOUR, T + DAY),
            (M, T + DAY, T + DAY + 1800),
            (R, T + DAY + 1800, T + DAY + 1830),
        ),
        id="ragged_edges_function_rollup_from_minutes_and_raw",
    ),
    pytest.param(
        q(T, T + 2 * HOUR, MINUTE),
        {},
        parts((M_APP, T, T + 2 * HOUR)),
        id="minute_granularity_uses_minute_app_rollup",
    ),
    pytest.param(
        q(T, T + 2 * HOUR, MINUTE, MEAN, group="function"),
        {},
        parts((M, T, T + 2 * HOUR)),
        id="minute_granularity_grouped_uses_wide_minute",
    ),
    pytest.param(
        q(T, T + 2 * HOUR, MINUTE, includes={"status_code": ("500",)}),
        {},
        parts((M, T, T + 2 * HOUR)),
        id="minute_granularity_filtered_uses_wide_minute",
    ),
    pytest.param(
        q(T, T + 2 * HOUR, MINUTE),
        {M_APP: T + HOUR},
        parts((M, T, T + HOUR), (M_APP, T + HOUR, T + 2 * HOUR)),
        id="past_minute_app_horizon_from_wide_minute",
    ),
    pytest.param(
        q(T, T + 2 * DAY, HOUR),
        {APP: T + DAY},
        parts((FN, T, T + DAY), (APP, T + DAY, T + 2 * DAY)),
        id="past_app_rollup_horizon_from_next_narrowest",
    ),
]


@pytest.mark.parametrize(("query", "horizons", "expected"), DECLARED)
def test_plan_declared(
    query: Query, horizons: Mapping[str, float | None], expected: tuple[Part, ...]
) -> None:
    assert plan(query, NOW, horizons).parts == expected


def test_declared_sources_name_the_narrow_rollup() -> None:
    got = plan(q(T + 30, T + 2 * HOUR + 90, None, group="function"), NOW, {})
    assert got.sources == (FN, M, R)
