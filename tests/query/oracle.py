"""A brute-force answer to a time-series query, straight from the event list.

Independent of the service's code on purpose: its own bucket arithmetic (integer
microseconds), its own filters, its own percentile interpolation.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from apinalytics.ingest.model import MAX_RESPONSE_US

from ..helpers import exact_us

DAY = 86400
WEEK = 7 * DAY
MONDAY = 4 * DAY  # 1970-01-05, the first Monday after the epoch
BASE = MONDAY + 2900 * WEEK  # 2025-08-04 00:00 UTC, a Monday
SPAN = 3 * DAY  # events fall in [BASE - 2 h, BASE + SPAN)

CONSUMERS = ("", "alice", "bob")
METHODS = ("GET", "post", "DELETE")
URLS = ("/a", "/b?x=1:2", "/c")
FUNCTIONS = ("", "list", "show")
STATUSES = (200, 404, 503)
PLANS = ("free", "pro")
NAMED = {"second": 1, "minute": 60, "hour": 3600, "day": DAY, "week": WEEK}


@dataclass(frozen=True)
class Ev:
    timestamp: float
    consumer_id: str
    method: str
    url: str
    function: str
    response_us: int
    status_code: int
    data: dict[str, str] | None

    @property
    def us(self) -> int:
        # Exactly as ingest stores it: rounded to the microsecond.
        return exact_us(self.timestamp)

    def body(self) -> dict[str, Any]:
        return {
            "timestamp": self.timestamp,
            "consumer_id": self.consumer_id,
            "method": self.method,
            "url": self.url,
            "function": self.function,
            "response_us": self.response_us,
            "status_code": self.status_code,
            "data": self.data,
        }

    def field(self, name: str) -> str:
        if name == "status_class":
            return f"{self.status_code // 100}xx"
        if name.startswith("data."):
            return (self.data or {}).get(name[5:], "")
        if name == "method":
            return self.method.upper()
        return str(getattr(self, name))


@dataclass(frozen=True)
class Q:
    start: int
    end: int
    granularity: str  # "" for the whole range
    aggregation: str
    group: str
    includes: tuple[tuple[str, str], ...]
    # "" (exact, the default, not sent), "exact" or "approximate".
    precision: str = ""

    def params(self) -> list[tuple[str, str]]:
        out = [("granularity", self.granularity), ("aggregation", self.aggregation)]
        out.append(("group", self.group))
        if self.precision:
            out.append(("precision", self.precision))
        out.extend(("include", f"{f}:{v}") for f, v in self.includes)
        return out


# Seconds within the span, with weight on minute, hour and day boundaries.
def _offsets() -> st.SearchStrategy[int]:
    return st.one_of(
        st.integers(-7200, SPAN),
        st.integers(-2, SPAN // 60).map(lambda m: m * 60),
        st.integers(-2, SPAN // 3600).map(lambda h: h * 3600),
        st.integers(0, SPAN // DAY).map(lambda d: d * DAY),
    )


_FRACTIONS = st.one_of(
    st.just(0.0),
    st.sampled_from([1e-6, 0.5, 0.999999, 0.9999996, 0.0000004]),
    st.floats(0, 1, exclude_max=True),
)


def events_near(centers: list[int]) -> st.SearchStrategy[Ev]:
    """Events clustered around a few instants (so buckets hold several rows and
    range edges cut through them), or on minute, hour and day boundaries."""
    second = st.one_of(
        st.sampled_from(centers).flatmap(lambda c: st.integers(c - 150, c + 150)),
        _offsets(),
    )
    return st.builds(
        Ev,
        timestamp=st.builds(lambda o, f: BASE + o + f, second, _FRACTIONS),
        consumer_id=st.sampled_from(CONSUMERS),
        method=st.sampled_from(METHODS),
        url=st.sampled_from(URLS),
        function=st.sampled_from(FUNCTIONS),
        response_us=st.one_of(st.integers(0, 5000), st.integers(0, MAX_RESPONSE_US)),
        status_code=st.sampled_from(STATUSES),
        data=st.one_of(st.none(), st.builds(lambda p: {"plan": p}, st.sampled_from(PLANS))),
    )


_COVERED = st.one_of(
    st.tuples(st.just("consumer_id"), st.sampled_from(CONSUMERS)),
    st.tuples(st.just("method"), st.sampled_from(("get", "POST", "PUT"))),
    st.tuples(st.just("function"), st.sampled_from(FUNCTIONS)),
    st.tuples(
        st.just("status_code"), st.sampled_from(("200", "404", "503", "302", "5xx", "2XX", "3xx"))
    ),
)
_INCLUDES = _COVERED | st.one_of(
    st.tuples(st.just("url"), st.sampled_from(URLS)),
    st.tuples(st.just("data.plan"), st.sampled_from(PLANS)),
)
ROLLUP_GRANULARITIES = ["", "", "minute", "hour", "day", "week", "120", "1800", "7200"]
RAW_ONLY = ["second", "90", "7000"]
ROLLUP_FIELDS = ["", "", "consumer_id", "method", "function", "status_code", "status_class"]
# Apdex thresholds (ms): the events' response_us lie mostly below 5 ms.
APDEX_MS = (1, 2, 5, 300)


def percentile_name(tenths: int) -> str:
    """``percentile_X`` for X = tenths / 10, with a decimal only when it has one."""
    whole, decimal = divmod(tenths, 10)
    return f"percentile_{whole}" + (f".{decimal}" if decimal else "")


@st.composite
def queries(draw: st.DrawFn, near: list[int]) -> Q:
    """A query whose range edges are random, on boundaries, or cut through ``near``."""
    # Edges: near an event or cluster (cutting through it), a few whole minutes or
    # hours away from one, or anywhere.
    edge = st.one_of(
        st.sampled_from(near).flatmap(lambda c: st.integers(c - 90, c + 90)),
        st.tuples(st.sampled_from(near), st.sampled_from([-3, -2, -1, 1, 2, 3])).map(
            lambda cm: cm[0] // 60 * 60 + cm[1] * 60
        ),
        st.tuples(st.sampled_from(near), st.sampled_from([-2, -1, 1, 2])).map(
            lambda ch: ch[0] // 3600 * 3600 + ch[1] * 3600
        ),
        _offsets(),
    )
    a, b = draw(edge), draw(edge)
    start, end = BASE + min(a, b), BASE + max(a, b) + draw(st.sampled_from([0, 1, 60]))
    if end == start:
        end += 1
    # Three queries in four ask only what the rollups cover, so they are read often;
    # the rest may ask anything (percentiles, url, data, sub-minute buckets).
    covered = draw(st.integers(0, 3)) > 0
    granularity = draw(st.sampled_from(ROLLUP_GRANULARITIES + ([] if covered else RAW_ONLY)))
    aggregation = draw(
        st.sampled_from(["count", "sum", "min", "max", "mean", "error_rate", "percentile", "apdex"])
    )
    if covered and aggregation in ("percentile", "apdex"):
        aggregation = "mean"
    if aggregation == "percentile":
        aggregation = percentile_name(
            draw(st.one_of(st.integers(1, 99).map(lambda p: p * 10), st.integers(1, 999)))
        )
    if aggregation == "apdex":
        aggregation = f"apdex_{draw(st.sampled_from(APDEX_MS))}"
    group = draw(st.sampled_from(ROLLUP_FIELDS + ([] if covered else ["url", "data.plan"])))
    includes = tuple(draw(st.lists(_COVERED if covered else _INCLUDES, max_size=2)))
    return Q(start, end, granularity, aggregation, group, includes)


@dataclass(frozen=True)
class Scenario:
    events: list[Ev]
    queries: list[Q]


@st.composite
def scenarios(draw: st.DrawFn, min_events: int = 1, max_queries: int = 5) -> Scenario:
    centers = draw(st.lists(_offsets(), min_size=1, max_size=3))
    evs = draw(st.lists(events_near(centers), min_size=min_events, max_size=60))
    near = centers + [int(e.timestamp) - BASE for e in evs]
    qs = draw(st.lists(queries(near), min_size=1, max_size=max_queries))
    return Scenario(evs, qs)


def width_origin(granularity: str, start: int, end: int) -> tuple[int, int]:
    if granularity == "":
        return end - start, start
    width = NAMED.get(granularity) or int(granularity)
    return width, (MONDAY if width % WEEK == 0 else 0)


def percentile_cont(values: list[int], fraction: float) -> float:
    ordered = sorted(values)
    pos = fraction * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def apdex(values: list[int], threshold_us: float) -> float:
    """(satisfied + tolerating / 2) / calls: satisfied <= T, tolerating <= 4T."""
    satisfied = sum(1 for v in values if v <= threshold_us)
    tolerating = sum(1 for v in values if threshold_us < v <= 4 * threshold_us)
    return (satisfied + tolerating / 2) / len(values)


def aggregate(name: str, evs: list[Ev]) -> float | int:
    values = [e.response_us for e in evs]
    if name == "error_rate":
        return sum(1 for e in evs if 500 <= e.status_code <= 599) / len(evs)
    if name.startswith("apdex_"):
        return apdex(values, int(name.removeprefix("apdex_")) * 1000)
    if name == "count":
        return len(values)
    if name == "sum":
        return sum(values)
    if name == "min":
        return min(values)
    if name == "max":
        return max(values)
    if name == "mean":
        return sum(values) / len(values)
    # X with at most one decimal, as tenths over 1000 (the service's fraction).
    tenths = round(float(name.removeprefix("percentile_")) * 10)
    return percentile_cont(values, tenths / 1000)


def matches(e: Ev, name: str, wanted: set[str]) -> bool:
    """Whether the event passes one field's filter (values OR-ed; 5xx a class)."""
    if name == "status_code":
        return str(e.status_code) in wanted or e.field("status_class") in wanted
    return e.field(name) in wanted


def answer(
    evs: list[Ev], q: Q, app_id: str, of: Callable[[list[Ev]], Any] | None = None
) -> dict[str, list[list[Any]]]:
    """The ``groups`` of the response, computed by brute force (each point's value
    ``of`` its events if given, else the query's aggregation)."""
    width, origin = width_origin(q.granularity, q.start, q.end)
    wanted: dict[str, set[str]] = defaultdict(set)
    for f, v in q.includes:
        wanted[f].add(v.upper() if f == "method" else v.lower() if f == "status_code" else v)
    cells: dict[str, dict[int, list[Ev]]] = defaultdict(lambda: defaultdict(list))
    for e in evs:
        if not q.start * 1_000_000 <= e.us < q.end * 1_000_000:
            continue
        if not all(matches(e, f, vs) for f, vs in wanted.items()):
            continue
        bucket = (e.us - origin * 1_000_000) // (width * 1_000_000) * width + origin
        key = e.field(q.group) if q.group else app_id
        cells[key][bucket].append(e)
    out = {
        key: [
            [b, of(vs) if of is not None else aggregate(q.aggregation, vs)]
            for b, vs in sorted(buckets.items())
        ]
        for key, buckets in cells.items()
    }
    if not q.group:
        out.setdefault(app_id, [])
    return out


def assert_same(got: dict[str, list[list[Any]]], want: dict[str, list[list[Any]]], q: Q) -> None:
    assert set(got) == set(want), (q, got, want)
    for key, series in want.items():
        g = got[key]
        assert [b for b, _ in g] == [b for b, _ in series], (q, key, g, series)
        for (_, gv), (_, wv) in zip(g, series, strict=True):
            if isinstance(wv, int):
                assert type(gv) is int and gv == wv, (q, key, g, series)
            else:
                assert math.isclose(gv, wv, rel_tol=1e-9, abs_tol=1e-6), (q, key, gv, wv)
