"""What a time-series request asks for, once its parameters are parsed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..measures import AGGREGATIONS, VALUE, Kind
from ..schema import QUERY_FIELDS

# Fields a query may group or filter by (schema.EVENT). ``data.<key>`` (a custom
# dimension) is accepted too; see ``params.field_name``.
FIELDS = QUERY_FIELDS
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
    # 1..99 for percentiles, None otherwise.
    percentile: int | None = None

    @property
    def needs_raw(self) -> bool:
        """Whether only raw events answer it (percentiles: measures.AGGREGATIONS)."""
        return AGGREGATIONS[self.kind].needs_raw


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

    def fields(self) -> set[str]:
        """Every field the query groups or filters by."""
        used = set(self.includes)
        if self.group is not None:
            used.add(self.group)
        return used
