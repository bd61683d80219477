"""What a time-series request asks for, once its parameters are parsed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..measures import AGGREGATIONS, VALUE, Kind
from ..schema import DERIVED_FIELDS, QUERY_FIELDS

# Fields a query may group or filter by (schema.EVENT). ``data.<key>`` (a custom
# dimension) is accepted too; see ``params.field_name``.
FIELDS = QUERY_FIELDS
# Fields a query may also group by, computed from a stored one (``status_class``).
GROUP_FIELDS = (*QUERY_FIELDS, *DERIVED_FIELDS)
DATA_PREFIX = "data."

MINUTE = 60
HOUR = 3600
DAY = 86400
WEEK = 7 * DAY
# 1970-01-01 was a Thursday; weeks start on Monday 1970-01-05 00:00 UTC.
WEEK_ORIGIN = 4 * DAY

NAMED_GRANULARITIES = {
    "second": 1,
    "minute": MINUTE,
    "hour": HOUR,
    "day": DAY,
    "week": WEEK,
}


@dataclass(frozen=True)
class Aggregation:
    kind: Kind
    # Percentiles: tenths of a percent, 1..999 (percentile_99.9 is 999); Apdex: the
    # threshold T in milliseconds; None otherwise.
    percentile: int | None = None
    apdex_ms: int | None = None

    @property
    def needs_raw(self) -> bool:
        """Whether only raw events answer it exactly (percentiles, Apdex:
        measures.AGGREGATIONS)."""
        return AGGREGATIONS[self.kind].needs_raw

    @property
    def approximable(self) -> bool:
        """Whether the histograms answer it approximately."""
        return AGGREGATIONS[self.kind].hist is not None

    @property
    def fields(self) -> frozenset[str]:
        """Dimensions a rollup must hold to answer it (``error_rate``: status_code)."""
        return AGGREGATIONS[self.kind].fields

    @property
    def fraction(self) -> float | None:
        return None if self.percentile is None else self.percentile / 1000

    @property
    def threshold_us(self) -> int | None:
        return None if self.apdex_ms is None else self.apdex_ms * 1000


@dataclass(frozen=True)
class Granularity:
    """Buckets of ``width_s`` seconds starting at ``origin_s + k * width_s``."""

    width_s: int
    origin_s: int = 0

    def floor(self, t: int) -> int:
        return self.origin_s + (t - self.origin_s) // self.width_s * self.width_s

    def buckets(self, start: int, end: int) -> int:
        """How many buckets meet ``[start, end)``."""
        return (self.floor(end - 1) - self.floor(start)) // self.width_s + 1


def granularity_of(width_s: int) -> Granularity:
    # Multiples of a week start on Monday, like the named ``week``; everything else
    # is aligned to the epoch itself.
    return Granularity(width_s, WEEK_ORIGIN if width_s % WEEK == 0 else 0)


@dataclass(frozen=True)
class Query:
    """``[start, end)`` in UNIX seconds; ``granularity`` None means the whole range."""

    start: int
    end: int
    granularity: Granularity | None = None
    aggregation: Aggregation = Aggregation(Kind.COUNT)
    group: str | None = None
    includes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # The event field aggregated (schema.VALUES).
    value: str = VALUE
    # precision=approximate: percentiles and Apdex from the histogram rollups.
    approximate: bool = False

    def fields(self) -> set[str]:
        """Every stored field the query groups or filters by (``status_class`` is
        ``status_code``'s)."""
        used = set(self.includes)
        if self.group is not None:
            used.add(
                DERIVED_FIELDS[self.group].source if self.group in DERIVED_FIELDS else self.group
            )
        return used
