"""One SQL statement per query: a UNION ALL of the plan's parts, in one round trip.

Every part of the plan reads its own relation over its own stretch of the range.
When no bucket of the answer spans two parts (one part, or every boundary between
parts on a bucket boundary: an hourly answer from an hour rollup and its ragged
minute edges), each part computes its answer rows itself. Otherwise every part
yields, per bucket and group, what re-aggregates exactly (count, sum, min, max) and
the union is aggregated once more outside, so a daily bucket merges the hour rollup's
middle with its minute edges. Percentiles read raw events only (the planner sees to
that) with ``percentile_cont``. Rows come back unordered: ``handlers.render`` sorts.

Identifiers come only from ``rollups`` declarations and the field table below, never
from request text; every value is a ``$n`` parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ..rollups import RAW, ROLLUPS, Rollup
from .model import DATA_PREFIX, Kind, Query
from .planner import Plan

# Field -> column, for the fields every relation that may be asked about has.
_COLUMNS = {
    "consumer_id": "consumer_id",
    "method": "method",
    "url": "url",
    "function": "function",
    "status_code": "status_code",
}

# Partial aggregates per source kind: raw events, or a rollup's stored aggregates.
_PARTIAL = {
    "calls": ("count(*)", "sum(calls)"),
    "sum_us": ("sum(response_us)", "sum(sum_us)"),
    "min_us": ("min(response_us)", "min(min_us)"),
    "max_us": ("max(response_us)", "max(max_us)"),
}

# What each aggregation needs from the parts, and how it combines them (over the
# parts' rows, or over a rollup's own rows: the same column names). Integers stay
# integers (sums come back from PostgreSQL as numeric). A mean is the exact sum, as
# float8, over the exact count: the correctly rounded quotient while sums stay below
# 2**53 microseconds (285 years), and the same expression on every path.
_FINAL: dict[Kind, tuple[tuple[str, ...], str]] = {
    Kind.COUNT: (("calls",), "sum(calls)::bigint"),
    Kind.SUM: (("sum_us",), "sum(sum_us)::bigint"),
    Kind.MEAN: (("calls", "sum_us"), "sum(sum_us)::float8 / sum(calls)"),
    Kind.MIN: (("min_us",), "min(min_us)::bigint"),
    Kind.MAX: (("max_us",), "max(max_us)::bigint"),
}

# The answer's value straight from raw events, and from a rollup row that already is
# one bucket and group of the answer.
_RAW_FINAL = {
    Kind.COUNT: "count(*)",
    Kind.SUM: "sum(response_us)::bigint",
    Kind.MEAN: "sum(response_us)::float8 / count(*)",
    Kind.MIN: "min(response_us)",
    Kind.MAX: "max(response_us)",
}
_ROW_FINAL = {
    Kind.COUNT: "calls",
    Kind.SUM: "sum_us",
    Kind.MEAN: "sum_us::float8 / calls",
    Kind.MIN: "min_us",
    Kind.MAX: "max_us",
}

# UNIX seconds of a bucket start: date_part is float8 (exact for whole seconds),
# cheaper per row than extract(), which is numeric.
_SECONDS = "date_part('epoch', bt)::bigint"


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
    column = _COLUMNS[name]
    return f"{column}::text" if column == "status_code" else column


def filters(includes: dict[str, tuple[str, ...]] | Any, args: Params) -> list[str]:
    """``field = ANY(values)`` per field: OR within a field, AND across fields."""
    out = []
    for name, values in includes.items():
        if name == "status_code":
            out.append(f"status_code = ANY({args.add([int(v) for v in values], '::smallint[]')})")
        else:
            out.append(f"{field_expr(name, args)} = ANY({args.add(list(values), '::text[]')})")
    return out


def _bucketing(query: Query, args: Params, rollups: Sequence[Rollup]) -> Callable[[str, str], str]:
    """The bucket-start expression (timestamptz) of a source's time column.

    Parts group by timestamps; only the merged rows are turned into UNIX seconds,
    because ``extract(epoch ...)`` on every scanned row costs more than the scan.
    """
    g = query.granularity
    if g is None:
        # The whole range is one bucket, stamped with its start.
        whole = args.add(timestamp(query.start), "::timestamptz")
        return lambda source, column: whole
    same = {r.relation for r in rollups if r.width_s == g.width_s and g.origin_s % r.width_s == 0}
    params: list[str] = []

    def bucket(source: str, column: str) -> str:
        # A rollup whose buckets are the query's needs no re-bucketing.
        if source in same:
            return column
        if not params:
            # Added on first use: PostgreSQL refuses parameters a statement never uses.
            params.append(args.add(timedelta(seconds=g.width_s), "::interval"))
            # An explicit origin: time_bucket's default one is not the epoch.
            params.append(args.add(timestamp(g.origin_s), "::timestamptz"))
        width, origin = params
        return f"time_bucket({width}, {column}, {origin})"

    return bucket


def statement(
    query: Query,
    plan: Plan,
    app: int,
    group_key: str,
    rollups: Sequence[Rollup] = ROLLUPS,
) -> tuple[str, list[Any]]:
    """SQL and arguments; rows are ``(g, bs, vs)``: a group, its buckets' starts (UNIX
    s) and their values, in the same order.

    ``group_key`` is the one group's key when the query has no ``group``.
    """
    args = Params()
    app_param = args.add(app)
    bucket_of = _bucketing(query, args, rollups)
    group = field_expr(query.group, args) if query.group else args.add(group_key, "::text")
    where = filters(dict(query.includes), args)

    def select(
        source: str, start: int, end: int, aggregates: list[str], grouped: bool = True
    ) -> str:
        column = "time" if source == RAW else "bucket"
        bucket = bucket_of(source, column)
        conditions = [
            f"app_id = {app_param}",
            f"{column} >= {args.add(timestamp(start))}",
            f"{column} < {args.add(timestamp(end))}",
            *where,
        ]
        return (
            f"SELECT {bucket} AS bt, {group} AS g, {', '.join(aggregates)} "
            f"FROM {source} WHERE {' AND '.join(conditions)}"
            + (" GROUP BY 1, 2" if grouped else "")
        )

    agg = query.aggregation
    if agg.kind is Kind.PERCENTILE:
        assert plan.raw_only and agg.percentile is not None
        fraction = args.add(agg.percentile / 100, "::float8")
        parts = [
            select(
                p.source,
                p.start,
                p.end,
                [f"percentile_cont({fraction}) WITHIN GROUP (ORDER BY response_us) AS v"],
            )
            for p in plan.parts
        ]
        union = "\n UNION ALL ".join(parts)
        return _per_group(f"SELECT {_SECONDS} AS b, g, v FROM (\n {union}\n) parts"), args.values

    if _disjoint(query, plan):
        # Every bucket of the answer lies in one part: each part answers its own.
        parts = []
        for p in plan.parts:
            if _one_row_per_point(query, p.source, rollups):
                # Its rows already are the answer's buckets and groups: no GROUP BY.
                value = _ROW_FINAL[agg.kind]
                parts.append(select(p.source, p.start, p.end, [f"{value} AS v"], grouped=False))
            else:
                value = _RAW_FINAL[agg.kind] if p.source == RAW else _FINAL[agg.kind][1]
                parts.append(select(p.source, p.start, p.end, [f"{value} AS v"]))
        union = "\n UNION ALL ".join(parts)
        return _per_group(f"SELECT {_SECONDS} AS b, g, v FROM (\n {union}\n) parts"), args.values

    needs, final = _FINAL[agg.kind]
    parts = []
    for p in plan.parts:
        if _one_row_per_point(query, p.source, rollups):
            # Its rows are already the partial aggregates: grouping them again would
            # cost a pass over every point of the answer for nothing.
            parts.append(select(p.source, p.start, p.end, list(needs), grouped=False))
            continue
        i = 0 if p.source == RAW else 1
        parts.append(select(p.source, p.start, p.end, [f"{_PARTIAL[n][i]} AS {n}" for n in needs]))
    union = "\n UNION ALL ".join(parts)
    sql = f"SELECT {_SECONDS} AS b, g, {final} AS v FROM (\n {union}\n) parts GROUP BY bt, g"
    return _per_group(sql), args.values


def _per_group(points: str) -> str:
    """One row per group, its buckets and values as two arrays (unordered): thousands
    of points come back as a few arrays, which the driver decodes far faster than as
    many rows."""
    return f"SELECT g, array_agg(b) AS bs, array_agg(v) AS vs FROM (\n{points}\n) points GROUP BY g"


def _disjoint(query: Query, plan: Plan) -> bool:
    """Whether no bucket of the answer spans two parts of the plan: one part, or every
    boundary between parts is a bucket boundary of the query's granularity."""
    if len(plan.parts) == 1:
        return True
    g = query.granularity
    return g is not None and all((p.start - g.origin_s) % g.width_s == 0 for p in plan.parts[1:])


def _one_row_per_point(query: Query, source: str, rollups: Sequence[Rollup]) -> bool:
    """Whether ``source`` holds exactly one row per bucket and group of ``query`` for an
    app: a rollup with the query's buckets and no dimension but the grouped field.
    Filters on that field keep it so; the planner never sends other filters here."""
    g = query.granularity
    rollup = next((r for r in rollups if r.relation == source), None)
    return (
        rollup is not None
        and g is not None
        and rollup.width_s == g.width_s
        and g.origin_s % rollup.width_s == 0
        and set(rollup.dimensions) == ({query.group} if query.group else set())
    )
