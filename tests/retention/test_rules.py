"""Retention settings, pure: durations as the command line writes them, and the
safety rules ``apinalytics retention set`` applies (retention.refusals).

* A finer rollup is never kept longer than a coarser one; the options name the
  relations they set (--minute the minute rollups, --hour the hour ones).
* On the Community edition a relation is kept longer than the refresh window (plus a
  bucket) of each rollup built on it; a refresh policy without a start is refused
  unless its source is kept forever.
* Each refusal is one sentence naming the option to change.
"""

from __future__ import annotations

import pytest

from apinalytics.edition import Edition
from apinalytics.retention import FLAGS, Rules, format_duration, parse_duration, refusals

MIN, HOUR, DAY = 60, 3600, 86400


# -- durations ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30d", 30 * DAY),
        ("180d", 180 * DAY),
        ("5y", 5 * 365 * DAY),
        ("12h", 12 * HOUR),
        ("90m", 90 * MIN),
        ("2w", 14 * DAY),
        ("45s", 45),
        (" 7D ", 7 * DAY),
        ("forever", None),
        ("none", None),
    ],
    ids=[
        "days",
        "many_days",
        "years",
        "hours",
        "minutes",
        "weeks",
        "seconds",
        "spaces_case",
        "forever",
        "none",
    ],
)
def test_parse_duration(text: str, seconds: int | None) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["0d", "30", "d", "1.5d", "-1d", "3 months", ""],
    ids=["zero", "no_unit", "no_number", "fraction", "negative", "words", "empty"],
)
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "forever"),
        (5 * 365 * DAY, "5y"),
        (14 * DAY, "2w"),
        (15 * DAY, "15d"),
        (36 * HOUR, "36h"),
        (61, "61s"),
    ],
    ids=["forever", "years", "weeks", "days_not_weeks", "hours", "seconds"],
)
def test_format_duration(seconds: int | None, text: str) -> None:
    assert format_duration(seconds) == text


# -- the safety rules (pure) ------------------------------------------------------

WINDOWS = {"events_1m": DAY, "events_1h": 3 * DAY}
APACHE = Rules(Edition.APACHE, {})
COMMUNITY = Rules(Edition.COMMUNITY, WINDOWS)


def keep(raw: int | None, minute: int | None, hour: int | None) -> dict[str, int | None]:
    """Every relation's retention, as ``retention set`` gives it: one per option."""
    per_flag = {"--raw": raw, "--minute": minute, "--hour": hour}
    return {relation: per_flag[flag] for relation, flag in FLAGS.items()}


@pytest.mark.parametrize(
    ("rules", "kept", "mentions"),
    [
        (APACHE, keep(None, None, None), []),
        (APACHE, keep(30 * DAY, 180 * DAY, 5 * 365 * DAY), []),
        (APACHE, keep(DAY, 2 * DAY, 2 * DAY), []),
        (
            APACHE,
            keep(30 * DAY, 180 * DAY, 90 * DAY),
            ["--hour to at least 180d", "--minute to at most 90d"],
        ),
        (APACHE, keep(30 * DAY, None, 5 * 365 * DAY), ["--hour to at least forever"]),
        (COMMUNITY, keep(30 * DAY, 180 * DAY, None), []),
        (COMMUNITY, keep(DAY + MIN, 3 * DAY + HOUR, None), []),
        (
            COMMUNITY,
            keep(DAY + MIN - 1, 10 * DAY, None),
            ["--raw to at least 2d", "refresh window"],
        ),
        (
            COMMUNITY,
            keep(30 * DAY, 3 * DAY + HOUR - 1, None),
            ["--minute to at least 4d", "refresh window"],
        ),
        (COMMUNITY, keep(3 * DAY, 30 * DAY, None), []),
        (
            Rules(Edition.COMMUNITY, {"events_1m": None, "events_1h": 3 * DAY}),
            keep(30 * DAY, None, None),
            ["no start_offset", "--raw forever"],
        ),
        (Rules(Edition.COMMUNITY, {"events_1m": None}), keep(None, None, None), []),
    ],
    ids=[
        "apache_forever_default",
        "apache_typical",
        "apache_no_refresh_window_rule",
        "minute_longer_than_hour",
        "minute_forever_hour_finite",
        "community_typical",
        "community_at_the_windows_plus_one_bucket",
        "community_raw_one_second_inside_refresh_window",
        "community_minute_inside_hour_refresh_window",
        "community_raw_shorter_than_ingest_window_is_safe",
        "community_refresh_without_start",
        "community_forever_ignores_unbounded_refresh",
    ],
)
def test_refusals(rules: Rules, kept: dict[str, int | None], mentions: list[str]) -> None:
    reasons = refusals(kept, rules)
    text = " ".join(reasons)
    if not mentions:
        assert reasons == []
    for m in mentions:
        assert m in text, f"{m!r} not in {text!r}"
    for r in reasons:
        assert r.endswith("."), "each refusal is one sentence"


NARROW = ("events_1h_app", "events_1h_function", "events_1h_consumer")
HISTOGRAMS = ("events_1h_function_hist", "events_1h_app_hist")
NARROW_WINDOWS = Rules(Edition.COMMUNITY, {**WINDOWS, **dict.fromkeys(NARROW, 7 * DAY)})


def test_hour_option_covers_the_narrow_hour_rollups() -> None:
    assert {rel: flag for rel, flag in FLAGS.items() if flag == "--hour"} == dict.fromkeys(
        ("events_1h", *NARROW, *HISTOGRAMS), "--hour"
    )


def test_minute_option_covers_the_narrow_minute_rollup() -> None:
    assert {rel: flag for rel, flag in FLAGS.items() if flag == "--minute"} == dict.fromkeys(
        ("events_1m", "events_1m_app"), "--minute"
    )


@pytest.mark.parametrize(
    ("hour", "mentions"),
    [
        pytest.param(7 * DAY + HOUR, [], id="hour_at_narrow_window_plus_one_bucket"),
        pytest.param(7 * DAY + HOUR - 1, ["--hour to at least 8d"], id="hour_inside_narrow_window"),
    ],
)
def test_community_hour_retention_covers_the_narrow_refresh_windows(
    hour: int, mentions: list[str]
) -> None:
    kept = {**keep(30 * DAY, 4 * DAY, hour), **dict.fromkeys(NARROW, hour)}
    reasons = refusals(kept, NARROW_WINDOWS)
    assert all(m in " ".join(reasons) for m in mentions)
    assert bool(reasons) == bool(mentions)
