"""The measures rollups store and the aggregations queries answer, declared once.

A **measure** is a column every rollup row holds for its bucket, app and
dimensions, computed from the raw events' ``VALUE`` and merged exactly across
rollup rows: ``calls`` (count), ``sum_us``, ``min_us``, ``max_us``. From
``MEASURES`` derive the rebuild's and the Apache materializer's INSERT
(``rollups/rebuild.py``, ``rollups/materializer.py``) and the partial aggregates of a
query that merges parts (``query/sql.py``).

An **aggregation** is what a query may ask for (``aggregation=``): a SQL template
over measures, e.g. ``{sum_us}::float8 / {calls}`` for the mean. The template is
finalised three ways (``query/sql.py``): from raw events (each ``{measure}`` becomes
its raw aggregate), from the merged parts (its merge aggregate), and from a rollup
row that already is one point of the answer (the column itself). An aggregation with
no template but a ``raw`` one (percentiles) can only be answered from raw events:
``needs_raw``, which the planner honours.

Adding a measure: an entry in ``MEASURES`` plus a migration pair
(``NNNN_name.apache.sql`` adding the column to the rollup tables,
``NNNN_name.community.sql`` recreating the continuous aggregates with it). Adding an
aggregation: a member of ``Kind`` and its entry in ``AGGREGATIONS``, nothing else.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from enum import Enum
from functools import cached_property

# The event field the rollups' measures aggregate (schema.VALUES lists what a query
# may name; a value the rollups do not hold is answered from raw events).
VALUE = "response_us"

# SQL that combines a stored row ``r`` with an incoming ``EXCLUDED`` one (an upsert's
# ON CONFLICT, bench/upsert_target.py), per merge function.
_COMBINE = {
    "sum": "r.{c} + EXCLUDED.{c}",
    "min": "least(r.{c}, EXCLUDED.{c})",
    "max": "greatest(r.{c}, EXCLUDED.{c})",
}


@dataclass(frozen=True)
class Measure:
    """A rollup column: ``raw_fn`` over the raw events' value (``count``: rows),
    ``merge_fn`` over rollup rows (whatever ``raw_fn`` was, rows merge exactly)."""

    column: str
    raw_fn: str
    merge_fn: str

    def raw(self, value: str = VALUE) -> str:
        """The aggregate over raw events (sums as PostgreSQL gives them: numeric)."""
        return "count(*)" if self.raw_fn == "count" else f"{self.raw_fn}({value})"

    def merged(self) -> str:
        """The aggregate over rollup rows (sums as numeric)."""
        return f"{self.merge_fn}({self.column})"

    def raw_stored(self, value: str = VALUE) -> str:
        """``raw`` as the column's bigint: a sum comes back from PostgreSQL as numeric."""
        return _stored(self.raw(value), self.raw_fn)

    def merged_stored(self) -> str:
        return _stored(self.merged(), self.merge_fn)

    def combine(self) -> str:
        return _COMBINE[self.merge_fn].format(c=self.column)


def _stored(expr: str, fn: str) -> str:
    return f"{expr}::bigint" if fn == "sum" else expr


# In the rollup tables' column order (every rollup holds every measure).
MEASURES: tuple[Measure, ...] = (
    Measure("calls", "count", "sum"),
    Measure("sum_us", "sum", "sum"),
    Measure("min_us", "min", "min"),
    Measure("max_us", "max", "max"),
)
BY_COLUMN = {m.column: m for m in MEASURES}
COLUMNS = tuple(m.column for m in MEASURES)


class Kind(Enum):
    COUNT = "count"
    MEAN = "mean"
    MIN = "min"
    MAX = "max"
    SUM = "sum"
    PERCENTILE = "percentile"


@dataclass(frozen=True)
class Aggregate:
    """How an aggregation is answered.

    ``template``: SQL over ``{measure}`` placeholders, the same text on every path
    (integers stay integers: sums are cast back from numeric). A mean is the exact
    sum, as float8, over the exact count: the correctly rounded quotient while sums
    stay below 2**53 microseconds (285 years). ``raw``: for an aggregation that
    needs every value, SQL over raw events with ``{value}`` (the value column) and
    ``{fraction}`` (the percentile, a parameter).
    """

    template: str | None = None
    raw: str | None = None

    @property
    def needs_raw(self) -> bool:
        return self.template is None

    @cached_property
    def needs(self) -> tuple[str, ...]:
        """The measures the template reads, in declaration order."""
        if self.template is None:
            return ()
        named = {name for _, name, _, _ in string.Formatter().parse(self.template) if name}
        return tuple(m for m in COLUMNS if m in named)

    def from_raw(self, value: str, fraction: str | None = None) -> str:
        """The answer's value straight from raw events."""
        if self.template is None:
            assert self.raw is not None and fraction is not None
            return self.raw.format(value=value, fraction=fraction)
        return self.template.format(**{m: BY_COLUMN[m].raw(value) for m in self.needs})

    @cached_property
    def from_parts(self) -> str:
        """The answer's value over partial rows (each part's measures, merged)."""
        assert self.template is not None
        return self.template.format(**{m: BY_COLUMN[m].merged() for m in self.needs})

    @cached_property
    def from_row(self) -> str:
        """The answer's value from a rollup row that already is one point of it."""
        assert self.template is not None
        return self.template.format(**{m: m for m in self.needs})


AGGREGATIONS: dict[Kind, Aggregate] = {
    Kind.COUNT: Aggregate("{calls}::bigint"),
    Kind.MEAN: Aggregate("{sum_us}::float8 / {calls}"),
    Kind.MIN: Aggregate("{min_us}::bigint"),
    Kind.MAX: Aggregate("{max_us}::bigint"),
    Kind.SUM: Aggregate("{sum_us}::bigint"),
    # Percentiles cannot be rebuilt from counts, sums, mins and maxes.
    Kind.PERCENTILE: Aggregate(raw="percentile_cont({fraction}) WITHIN GROUP (ORDER BY {value})"),
}
assert set(AGGREGATIONS) == set(Kind), "every Kind is declared in AGGREGATIONS"
