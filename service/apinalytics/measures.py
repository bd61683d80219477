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

A **derived measure** (``DERIVED``, e.g. ``server_errors``) is no column of its own:
it is counted from a dimension the rollups already hold (``status_code``), so the
planner reads it from the rollups that hold that dimension, exactly, and no
continuous aggregate has to be recreated (which would lose its rows past raw
retention).

The **latency histogram** (``HISTOGRAM``) is held by the histogram rollups
(``rollups/declared.py``, ``histogram=True``): their rows count events per bucket,
app, dimensions and ``bin``, the bin an immutable expression of the value
(``Histogram.bin_of``), so continuous aggregates can group by it. Approximate
percentiles and Apdex are read from them (``Aggregate.hist``), within
``HISTOGRAM.relative_error`` of the exact value (docs/querying.md).

Adding a measure: an entry in ``MEASURES`` plus a migration pair
(``NNNN_name.apache.sql`` adding the column to the rollup tables,
``NNNN_name.community.sql`` recreating the continuous aggregates with it), or an
entry in ``DERIVED`` if it is counted from a dimension the rollups hold (no
migration). Adding an aggregation: a member of ``Kind`` and its entry in
``AGGREGATIONS``, nothing else.
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
    # A derived measure: counts the rows (of raw events, or ``calls`` of rollup rows)
    # where this condition on ``field`` holds; rollups without ``field`` cannot say.
    where: str | None = None
    field: str | None = None

    def raw(self, value: str = VALUE) -> str:
        """The aggregate over raw events (sums as PostgreSQL gives them: numeric)."""
        if self.where is not None:
            return f"count(*) FILTER (WHERE {self.where})"
        return "count(*)" if self.raw_fn == "count" else f"{self.raw_fn}({value})"

    def merged(self) -> str:
        """The aggregate over partial rows that hold this measure (sums as numeric)."""
        return f"{self.merge_fn}({self.column})"

    def rollup(self) -> str:
        """The aggregate over a rollup's rows (a derived measure from ``calls``)."""
        if self.where is not None:
            return f"coalesce(sum(calls) FILTER (WHERE {self.where}), 0)"
        return self.merged()

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
# Measures counted from a dimension of the rollups (``field``), no column of their own.
DERIVED: tuple[Measure, ...] = (
    # Calls answered with a server error (500-599: ingest accepts no status above).
    Measure("server_errors", "count", "sum", where="status_code >= 500", field="status_code"),
)
BY_COLUMN = {m.column: m for m in (*MEASURES, *DERIVED)}
COLUMNS = tuple(m.column for m in MEASURES)
_ALL = tuple(BY_COLUMN)


@dataclass(frozen=True)
class Histogram:
    """Counts of the value in logarithmic bins: bin 0 holds 0, bin ``i >= 1`` holds
    ``[ratio**(i-1), ratio**i)``. Each bin is represented by the point of least
    relative error to both of its bounds, ``2 * lo * hi / (lo + hi)``; a value's
    representative is within ``(ratio - 1) / (ratio + 1)`` of it, relative
    (0.0099 for 1.02), and so is a percentile interpolated between two ranks' bins
    (docs/querying.md). Values are whole microseconds from 0 to 86,400,000,000:
    bins 0 to 1,272."""

    ratio: float
    # The bound the answers carry (``precision.relative_error``): at least
    # (ratio - 1) / (ratio + 1), rounded up.
    relative_error: float

    def bin_of(self, value: str) -> str:
        """The bin of ``value`` (bigint SQL), an immutable expression: continuous
        aggregates group by it. ``ln`` of float8, so every server bins alike."""
        return (
            f"(CASE WHEN {value} <= 0 THEN 0 "
            f"ELSE floor(ln({value}::float8) / ln({self.ratio}::float8)) + 1 END)::smallint"
        )

    def representative(self, bin: str) -> str:
        """The value a bin stands for (float8)."""
        return (
            f"(CASE WHEN {bin} = 0 THEN 0::float8 "
            f"ELSE power({self.ratio}::float8, {bin}) * (2 / (1 + {self.ratio}::float8)) END)"
        )


HISTOGRAM = Histogram(ratio=1.02, relative_error=0.01)
assert (HISTOGRAM.ratio - 1) / (HISTOGRAM.ratio + 1) <= HISTOGRAM.relative_error


class Kind(Enum):
    COUNT = "count"
    MEAN = "mean"
    MIN = "min"
    MAX = "max"
    SUM = "sum"
    ERROR_RATE = "error_rate"
    PERCENTILE = "percentile"
    APDEX = "apdex"


@dataclass(frozen=True)
class Aggregate:
    """How an aggregation is answered.

    ``template``: SQL over ``{measure}`` placeholders, the same text on every path
    (integers stay integers: sums are cast back from numeric). A mean is the exact
    sum, as float8, over the exact count: the correctly rounded quotient while sums
    stay below 2**53 microseconds (285 years). ``raw``: for an aggregation that
    needs every value, SQL over raw events with ``{value}`` (the value column) and
    ``{fraction}`` (the percentile, a parameter) or ``{t}`` (Apdex's threshold in
    microseconds, a parameter). ``hist``: the approximate answer over a bucket's
    merged histogram, one row per bin with ``n`` (its count), ``upto`` (the count up
    to and including it), ``total``, ``rep`` (``Histogram.representative``) and,
    for percentiles, ``h`` (the fractional rank ``fraction * (total - 1)``, as
    ``percentile_cont``) and ``k`` (``floor(h)``).
    """

    template: str | None = None
    raw: str | None = None
    hist: str | None = None

    @property
    def needs_raw(self) -> bool:
        return self.template is None

    @cached_property
    def needs(self) -> tuple[str, ...]:
        """The measures the template reads, in declaration order."""
        if self.template is None:
            return ()
        named = {name for _, name, _, _ in string.Formatter().parse(self.template) if name}
        return tuple(m for m in _ALL if m in named)

    @cached_property
    def fields(self) -> frozenset[str]:
        """Dimensions a rollup must hold to answer it (those of derived measures)."""
        return frozenset(f for m in self.needs if (f := BY_COLUMN[m].field) is not None)

    def from_raw(self, value: str, parameter: str | None = None) -> str:
        """The answer's value straight from raw events (``parameter``: the fraction
        or threshold of a ``raw`` template)."""
        if self.template is None:
            assert self.raw is not None and parameter is not None
            return self.raw.format(value=value, fraction=parameter, t=parameter)
        return self.template.format(**{m: BY_COLUMN[m].raw(value) for m in self.needs})

    @cached_property
    def from_rollup(self) -> str:
        """The answer's value over a rollup's rows."""
        assert self.template is not None
        return self.template.format(**{m: BY_COLUMN[m].rollup() for m in self.needs})

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
    Kind.ERROR_RATE: Aggregate("{server_errors}::float8 / {calls}"),
    # Percentiles cannot be rebuilt from counts, sums, mins and maxes: exactly, from raw
    # events; approximately, interpolated as percentile_cont between the two closest
    # ranks, each rank's value its bin's representative.
    Kind.PERCENTILE: Aggregate(
        raw="percentile_cont({fraction}) WITHIN GROUP (ORDER BY {value})",
        hist="min(rep) FILTER (WHERE upto > k)"
        " + (coalesce(min(rep) FILTER (WHERE upto > k + 1), min(rep) FILTER (WHERE upto > k))"
        " - min(rep) FILTER (WHERE upto > k)) * max(h - k)",
    ),
    # Apdex: (satisfied + tolerating / 2) / calls, satisfied <= T < tolerating <= 4T.
    Kind.APDEX: Aggregate(
        raw="(count(*) FILTER (WHERE {value} <= {t})"
        " + count(*) FILTER (WHERE {value} > {t} AND {value} <= 4 * {t}) / 2.0)::float8"
        " / count(*)",
        hist="((coalesce(sum(n) FILTER (WHERE rep <= {t}), 0)"
        " + coalesce(sum(n) FILTER (WHERE rep > {t} AND rep <= 4 * {t}), 0) / 2.0)"
        " / sum(n))::float8",
    ),
}
assert set(AGGREGATIONS) == set(Kind), "every Kind is declared in AGGREGATIONS"
