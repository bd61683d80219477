"""One SQL statement per query: a UNION ALL of the plan's parts, in one round trip.

Every part of the plan reads its own relation over its own stretch of the range.
When no bucket of the answer spans two parts (one part, or every boundary between
parts on a bucket boundary: an hourly answer from an hour rollup and its ragged
minute edges), each part computes its answer rows itself. Otherwise every part
yields, per bucket and group, what re-aggregates exactly (count, sum, min, max) and
the union is aggregated once more outside, so a daily bucket merges the hour rollup's
middle with its minute edges. Percentiles read raw events only (the planner sees to
that) with ``percentile_cont``. Rows come back unordered: ``handlers.render`` sorts.

The planner decides what each part does (``Part.points``, ``Part.rebucket``,
``Plan.merge``); the SQL of measures and aggregations comes from ``measures``.
Identifiers come only from the declared rollups, the event schema and the measures,
never from request text; every value is a ``$n`` parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ..measures import AGGREGATIONS, BY_COLUMN, HISTOGRAM, Aggregate
from ..rollups.declared import RAW
from ..schema import BY_NAME, DERIVED_FIELDS, status_codes
from .model import DATA_PREFIX, Query
from .planner import Part, Plan

# UNIX seconds of a bucket start: date_part is float8 (exact for whole seconds),
# cheaper per row than extract(), which is numeric.
_SECONDS = "date_part('epoch', bt)::bigint"
# Field types whose filter values are sent as integers.
_INTEGER_TYPES = ("smallint", "integer", "bigint")


def timestamp(t: int) -> datetime:
    return datetime.fromtimestamp(t, UTC)


@dataclass
class Params:
    """The $n parameters of one statement: values never enter the SQL text."""

    values: list[Any] = field(default_factory=list)

    def add(self, value: Any, cast: str = "") -> str:
        self.values.append(value)
        return f"${len(self.values)}{cast}"


def field_expr(name: str, args: Params) -> str:
    """The SQL expression of a field, as text (group keys are always strings)."""
    if name.startswith(DATA_PREFIX):
        # A missing key groups (and matches) as the empty string.
        return f"coalesce(data ->> {args.add(name[len(DATA_PREFIX) :], '::text')}, '')"
    if name in DERIVED_FIELDS:
        return DERIVED_FIELDS[name].sql
    column = BY_NAME[name]
    return column.name if column.sql_type == "text" else f"{column.name}::text"


def filters(includes: Mapping[str, Sequence[str]], args: Params) -> list[str]:
    """``field = ANY(values)`` per field: OR within a field, AND across fields."""
    out = []
    for name, values in includes.items():
        column = BY_NAME.get(name)
        if column is not None and column.name == "status_code":
            # A class (5xx) is its hundred codes: the same filter the rollups answer.
            codes = sorted({c for v in values for c in status_codes(v)})
            typed = args.add(codes, f"::{column.sql_type}[]")
            out.append(f"{column.name} = ANY({typed})")
        elif column is not None and column.sql_type in _INTEGER_TYPES:
            typed = args.add([int(v) for v in values], f"::{column.sql_type}[]")
            out.append(f"{column.name} = ANY({typed})")
        else:
            out.append(f"{field_expr(name, args)} = ANY({args.add(list(values), '::text[]')})")
    return out


@dataclass
class _Statement:
    """What every part's SELECT shares: the query, its parameters and expressions."""

    query: Query
    args: Params
    app: str
    group: str
    where: list[str]
    bucket: Callable[[str], str]

    def select(self, part: Part, values: list[str], keys: Sequence[str] = ()) -> str:
        """The part's rows: bucket start, group, ``keys`` (grouped by too),
        ``values``; grouped unless its rows already are the answer's points."""
        column = "time" if part.source == RAW else "bucket"
        bucket = self.bucket(column) if part.rebucket else column
        conditions = [
            f"app_id = {self.app}",
            f"{column} >= {self.args.add(timestamp(part.start))}",
            f"{column} < {self.args.add(timestamp(part.end))}",
            *self.where,
        ]
        grouped = ", ".join(str(i) for i in range(1, 3 + len(keys)))
        return (
            f"SELECT {bucket} AS bt, {self.group} AS g, {''.join(f'{k}, ' for k in keys)}"
            f"{', '.join(values)} FROM {part.source} WHERE {' AND '.join(conditions)}"
            + ("" if part.points else f" GROUP BY {grouped}")
        )


def statement(query: Query, plan: Plan, app: int, group_key: str) -> tuple[str, list[Any]]:
    """SQL and arguments; rows are ``(g, bs, vs)``: a group, its buckets' starts (UNIX
    s) and their values, in the same order.

    ``group_key`` is the one group's key when the query has no ``group``.
    """
    args = Params()
    app_param = args.add(app)
    bucket = _bucketing(query, args)
    group = field_expr(query.group, args) if query.group else args.add(group_key, "::text")
    st = _Statement(query, args, app_param, group, filters(query.includes, args), bucket)
    aggregate = AGGREGATIONS[query.aggregation.kind]
    if plan.histogram:
        points = _histogram(st, plan, aggregate)
    elif plan.merge:
        points = _merged(st, plan, aggregate)
    else:
        points = _each_part(st, plan, aggregate)
    return _per_group(points), args.values


def _parameter(st: _Statement) -> str | None:
    """The percentile's fraction or Apdex's threshold (µs) as a parameter, if any."""
    agg = st.query.aggregation
    if agg.fraction is not None:
        return st.args.add(agg.fraction, "::float8")
    if agg.threshold_us is not None:
        return st.args.add(agg.threshold_us, "::bigint")
    return None


def _each_part(st: _Statement, plan: Plan, aggregate: Aggregate) -> str:
    """Every bucket of the answer lies in one part: each part answers its own."""
    parameter: list[str | None] = []

    def value(part: Part) -> str:
        if part.points:
            return aggregate.from_row
        if part.source != RAW:
            return aggregate.from_rollup
        if not parameter:
            parameter.append(_parameter(st))
        return aggregate.from_raw(st.query.value, parameter[0])

    union = "\n UNION ALL ".join(st.select(p, [f"{value(p)} AS v"]) for p in plan.parts)
    return f"SELECT {_SECONDS} AS b, g, v FROM (\n {union}\n) parts"


def _merged(st: _Statement, plan: Plan, aggregate: Aggregate) -> str:
    """Every part yields, per bucket and group, the measures the aggregation needs;
    their union is aggregated once more."""
    needs = aggregate.needs
    parts = []
    for p in plan.parts:
        if p.points:
            # Its rows are already the partial aggregates: grouping them again would
            # cost a pass over every point of the answer for nothing.
            parts.append(st.select(p, list(needs)))
        elif p.source == RAW:
            raw = [f"{BY_COLUMN[n].raw(st.query.value)} AS {n}" for n in needs]
            parts.append(st.select(p, raw))
        else:
            parts.append(st.select(p, [f"{BY_COLUMN[n].rollup()} AS {n}" for n in needs]))
    union = "\n UNION ALL ".join(parts)
    final = aggregate.from_parts
    return f"SELECT {_SECONDS} AS b, g, {final} AS v FROM (\n {union}\n) parts GROUP BY bt, g"


def _histogram(st: _Statement, plan: Plan, aggregate: Aggregate) -> str:
    """Approximate answers: every part yields, per bucket, group and bin, its count
    (histogram rollups their ``calls``, raw events binned alike); the union is merged
    per bucket, group and bin (when a bucket spans parts), ranked, and
    ``aggregate.hist`` reads each bucket's histogram (measures.HISTOGRAM)."""
    assert aggregate.hist is not None
    parts = []
    for p in plan.parts:
        if p.source == RAW:
            parts.append(st.select(p, ["count(*) AS n"], [f"{HISTOGRAM.bin_of(st.query.value)}"]))
        else:
            # Rows already one per bucket, group and bin are read as they are.
            parts.append(st.select(p, ["calls AS n" if p.points else "sum(calls) AS n"], ["bin"]))
    union = "\n UNION ALL ".join(parts)
    # Each bucket in one part: its bins are already unique.
    merged = (
        f"SELECT bt, g, bin, sum(n) AS n FROM (\n {union}\n) parts (bt, g, bin, n) "
        "GROUP BY bt, g, bin"
        if plan.merge
        else f"SELECT * FROM (\n {union}\n) parts (bt, g, bin, n)"
    )
    parameter = _parameter(st)
    assert parameter is not None
    rank = ""
    if st.query.aggregation.fraction is not None:
        # percentile_cont's fractional rank, and the rank below it.
        h = f"{parameter} * (total - 1)"
        rank = f", {h} AS h, floor({h}) AS k"
    return f"""SELECT {_SECONDS} AS b, g, {aggregate.hist.format(fraction=parameter, t=parameter)} AS v
FROM (
  SELECT bt, g, n, upto, {HISTOGRAM.representative("bin")} AS rep{rank}
  FROM (
    SELECT bt, g, bin, n,
      sum(n) OVER (PARTITION BY bt, g COLLATE "C" ORDER BY bin) AS upto,
      (sum(n) OVER (PARTITION BY bt, g COLLATE "C"))::float8 AS total
    FROM (
      {merged}
    ) merged
  ) ranked
) binned GROUP BY bt, g"""


def _bucketing(query: Query, args: Params) -> Callable[[str], str]:
    """The bucket-start expression (timestamptz) of a time column, for parts whose rows
    need re-bucketing (``Part.rebucket``).

    Parts group by timestamps; only the merged rows are turned into UNIX seconds,
    because ``extract(epoch ...)`` on every scanned row costs more than the scan.
    """
    g = query.granularity
    if g is None:
        # The whole range is one bucket, stamped with its start.
        whole = args.add(timestamp(query.start), "::timestamptz")
        return lambda column: whole
    params: list[str] = []

    def bucket(column: str) -> str:
        if not params:
            # Added on first use: PostgreSQL refuses parameters a statement never uses.
            params.append(args.add(timedelta(seconds=g.width_s), "::interval"))
            # An explicit origin: time_bucket's default one is not the epoch.
            params.append(args.add(timestamp(g.origin_s), "::timestamptz"))
        width, origin = params
        return f"time_bucket({width}, {column}, {origin})"

    return bucket


def _per_group(points: str) -> str:
    """One row per group, its buckets and values as two arrays (unordered): thousands
    of points come back as a few arrays, which the driver decodes far faster than as
    many rows."""
    return f"SELECT g, array_agg(b) AS bs, array_agg(v) AS vs FROM (\n{points}\n) points GROUP BY g"
