"""Parameter parsing: every accepted form, and a 400 naming the parameter for the rest."""

from __future__ import annotations

import pytest

from apinalytics.errors import InvalidQuery
from apinalytics.query.model import WEEK_ORIGIN, Aggregation, Granularity, Kind
from apinalytics.query.params import (
    MAX_TIME,
    parse_aggregation,
    parse_granularity,
    parse_includes,
    parse_query,
    parse_range,
)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param([], {}, id="none"),
        pytest.param([""], {}, id="empty_is_default"),
        pytest.param(["function:a"], {"function": ["a"]}, id="one"),
        pytest.param(["function:a", "function:b"], {"function": ["a", "b"]}, id="or_within_field"),
        pytest.param(
            ["function:a", "consumer_id:c"],
            {"function": ["a"], "consumer_id": ["c"]},
            id="and_across_fields",
        ),
        pytest.param(["url:/a?x=1:2"], {"url": ["/a?x=1:2"]}, id="value_after_first_colon"),
        pytest.param(["consumer_id:"], {"consumer_id": [""]}, id="empty_value"),
        pytest.param(["method:get"], {"method": ["GET"]}, id="method_upper_case"),
        pytest.param(["status_code:200"], {"status_code": ["200"]}, id="status_code"),
        pytest.param(["function:a", "function:a"], {"function": ["a"]}, id="duplicate_once"),
        pytest.param(["data.plan:pro"], {"data.plan": ["pro"]}, id="custom_dimension"),
    ],
)
def test_parse_includes(values: list[str], expected: dict[str, list[str]]) -> None:
    assert parse_includes(values) == expected


@pytest.mark.parametrize(
    ("values", "why"),
    [
        pytest.param(["function"], "field:value", id="no_colon"),
        pytest.param(["colour:red"], "unknown field", id="unknown_field"),
        pytest.param([":x"], "unknown field", id="empty_field"),
        pytest.param(["status_code:abc"], "100 to 599", id="status_not_integer"),
        pytest.param(["status_code:600"], "100 to 599", id="status_above_range"),
        pytest.param(["status_code:99"], "100 to 599", id="status_below_range"),
        pytest.param(["data.:x"], "data.<key>", id="data_without_key"),
        pytest.param(["consumer_id:a\x00b"], "NUL", id="nul_in_value"),
        pytest.param(["url:\x00"], "NUL", id="nul_as_value"),
        pytest.param(["data.a\x00:x"], "NUL", id="nul_in_data_key"),
    ],
)
def test_parse_includes_errors(values: list[str], why: str) -> None:
    with pytest.raises(InvalidQuery) as exc:
        parse_includes(values)
    assert exc.value.param == "include"
    assert why in exc.value.why


@pytest.mark.parametrize(
    ("start", "end", "param"),
    [
        pytest.param("10", "10", "end", id="empty_range"),
        pytest.param("10", "9", "end", id="end_before_start"),
        pytest.param("x", "9", "start", id="start_not_a_number"),
        pytest.param("1.5", "9", "start", id="start_fraction"),
        pytest.param("-1", "9", "start", id="start_negative"),
        pytest.param("1\n", "9", "start", id="start_trailing_newline"),
        pytest.param("1", str(MAX_TIME + 1), "end", id="end_past_year_9999"),
    ],
)
def test_parse_range_errors(start: str, end: str, param: str) -> None:
    with pytest.raises(InvalidQuery) as exc:
        parse_range(start, end)
    assert exc.value.param == param


def test_parse_range_max() -> None:
    assert parse_range("0", str(MAX_TIME)) == (0, MAX_TIME)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("", None, id="empty_is_whole_range"),
        pytest.param("second", Granularity(1), id="second"),
        pytest.param("minute", Granularity(60), id="minute"),
        pytest.param("hour", Granularity(3600), id="hour"),
        pytest.param("day", Granularity(86400), id="day"),
        pytest.param("week", Granularity(604800, WEEK_ORIGIN), id="week_from_monday"),
        pytest.param("1209600", Granularity(1209600, WEEK_ORIGIN), id="two_weeks_from_monday"),
        pytest.param("90", Granularity(90), id="integer_seconds"),
    ],
)
def test_parse_granularity(raw: str, expected: Granularity | None) -> None:
    assert parse_granularity(raw) == expected


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        pytest.param("0", "whole positive number of seconds", id="zero"),
        pytest.param("-60", "whole positive number of seconds", id="negative"),
        pytest.param("month", "whole positive number of seconds", id="unknown_name"),
        pytest.param("1.5", "whole positive number of seconds", id="fraction"),
        pytest.param("Hour", "whole positive number of seconds", id="names_are_lower_case"),
        pytest.param("60\n", "whole positive number of seconds", id="trailing_newline"),
        pytest.param(str(MAX_TIME + 1), f"at most {MAX_TIME} seconds", id="past_year_9999"),
        pytest.param("9" * 30, f"at most {MAX_TIME} seconds", id="huge"),
    ],
)
def test_parse_granularity_errors(raw: str, why: str) -> None:
    with pytest.raises(InvalidQuery) as exc:
        parse_granularity(raw)
    assert exc.value.param == "granularity"
    assert why in exc.value.why


def test_parse_granularity_max() -> None:
    assert parse_granularity(str(MAX_TIME)) == Granularity(MAX_TIME)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("", Aggregation(Kind.COUNT), id="empty_is_count"),
        pytest.param("mean", Aggregation(Kind.MEAN), id="mean"),
        pytest.param("percentile_1", Aggregation(Kind.PERCENTILE, 10), id="percentile_lowest"),
        pytest.param("percentile_99", Aggregation(Kind.PERCENTILE, 990), id="percentile_highest"),
    ],
)
def test_parse_aggregation(raw: str, expected: Aggregation) -> None:
    assert parse_aggregation(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["percentile_0", "percentile_100", "percentile_05", "percentile_", "percentile_5\n", "median"],
)
def test_parse_aggregation_errors(raw: str) -> None:
    with pytest.raises(InvalidQuery) as exc:
        parse_aggregation(raw)
    assert exc.value.param == "aggregation"


@pytest.mark.parametrize(
    ("end", "granularity", "ok"),
    [
        pytest.param(600, "60", True, id="at_max_buckets"),
        pytest.param(601, "60", False, id="one_bucket_over_max"),
        pytest.param(10**9, "", True, id="whole_range_is_one_bucket"),
    ],
)
def test_max_buckets(end: int, granularity: str, ok: bool) -> None:
    params = {"granularity": [granularity]}
    if ok:
        parse_query("0", str(end), params, max_buckets=10)
    else:
        with pytest.raises(InvalidQuery) as exc:
            parse_query("0", str(end), params, max_buckets=10)
        assert exc.value.param == "granularity"


def test_repeated_single_parameter() -> None:
    with pytest.raises(InvalidQuery) as exc:
        parse_query("0", "10", {"aggregation": ["sum", "max"]}, max_buckets=10)
    assert exc.value.param == "aggregation"


def test_an_empty_repeat_gives_way() -> None:
    q = parse_query("0", "7200", {"granularity": ["hour", ""]}, max_buckets=10)
    assert q.granularity == Granularity(3600)


def test_end_before_start_names_both() -> None:
    with pytest.raises(InvalidQuery) as exc:
        parse_range("20", "10")
    assert exc.value.why == "must be after start (end 10 <= start 20)"
