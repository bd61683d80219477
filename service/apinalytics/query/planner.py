"""The rollup-aware planner: which relation answers which part of the range.

A pure function over declared data (``rollups.ROLLUPS`` and ``rollups.RAW``): no I/O,
no clock (``now`` is passed in); the retention horizons and the app's pending
stretches (``rollups.pending``) are passed in too, read in one round trip by
``execute.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from ..errors import Gone
from ..measures import VALUE
from ..rollups import RAW, ROLLUPS, Rollup
from ..rollups.pending import join
from .model import Query


@dataclass(frozen=True)
class Part:
    """Read ``[start, end)`` of the query from ``source`` (a rollup relation or RAW).

    What the SQL builder needs besides (derived from the query and the part, so not
    compared): ``points``, whether the source holds exactly one row per bucket and
    group of the answer (no GROUP BY needed); ``rebucket``, whether its rows must be
    put into the query's buckets (not for a rollup whose buckets are the query's).
    """

    source: str
    start: int
    end: int
    points: bool = field(default=False, compare=False)
    rebucket: bool = field(default=True, compare=False)


@dataclass(frozen=True)
class Plan:
    """Consecutive parts covering the query's range, in time order."""

    parts: tuple[Part, ...]
    # Distinct sources read, coarsest first (raw events last).
    sources: tuple[str, ...]
    # Whether a bucket of the answer spans two parts, so the parts yield what
    # re-aggregates exactly and their union is merged once more (derived: not compared).
    merge: bool = field(default=False, compare=False)
    # An approximate answer from the histogram rollups (and raw events binned alike
    # for what they do not cover): every part yields histograms, merged per bucket.
    histogram: bool = False

    @property
    def reads_rollups(self) -> bool:
        return any(p.source != RAW for p in self.parts)


def plan(
    query: Query,
    now: float,
    horizons: Mapping[str, float | None],
    *,
    rollups: Sequence[Rollup] = ROLLUPS,
    force_raw: bool = False,
    pending: Sequence[tuple[float, float]] = (),
) -> Plan:
    """Pick, for each part of ``[query.start, query.end)``, the coarsest exact source.

    Decision order:

    1. ``force_raw`` (the ``X-Apinalytics-Planner: raw`` header): raw events only.
    2. An exact percentile or Apdex needs every value, and the rollups hold measures
       of one value (``measures.VALUE``): raw events only. Approximate ones
       (``precision=approximate``) are read from the histogram rollups, and only
       from them; nothing else reads a histogram rollup. If no histogram rollup
       answers any part, the answer is exact, from raw events.
    3. The app's pending stretches (``pending``: ``[start, end)`` in UNIX seconds,
       whole hours, where the materializer has not caught up with the raw events yet)
       are read from raw events, from the raw horizon on: the rollups may not hold
       their events yet. Only the rest of the range goes on to the rollups.
    4. Candidate rollups are those whose dimensions cover every field the query groups
       or filters by (url and ``data.*`` are in none, so those go to raw events; an
       ``error_rate`` needs ``status_code``), and whose bucket width divides the query's buckets (width and origin are multiples
       of the rollup's width; the whole range as one bucket is divided by any width).
       No candidate: raw events only.
    5. Candidates are tried coarsest first, the narrowest (fewest dimensions) first
       among equally wide ones. The coarsest reads the largest stretch of its
       whole buckets inside the range, from its retention horizon on; what is left
       on either side (ragged edges, or data older than its horizon) goes to the next
       finer candidate, and what no rollup covers to raw events.
    6. Raw events are never read before their horizon: a part that only raw events
       could answer there (a ragged edge, a percentile, url or data, a granularity
       finer than the rollups) is ``Gone`` (410).

    ``horizons`` maps a relation to the UNIX time from which its data is complete;
    None or a missing relation means complete.

    Adjacent raw parts are joined into one. Finally each part says whether its rows already are the answer's points and
    whether they need re-bucketing, and the plan whether its parts are merged.
    """
    histogram = query.approximate and query.aggregation.approximable
    if force_raw or (query.aggregation.needs_raw and not histogram) or query.value != VALUE:
        parts = _raw(query.start, query.end, _Context(query, now, horizons, rollups))
        return _decided(query, parts, (RAW,))
    candidates = _candidates(query, rollups, histogram=histogram)
    ctx = _Context(query, now, horizons, rollups)
    parts = _joined(_around_pending(query.start, query.end, pending, candidates, ctx))
    used_sources = {p.source for p in parts}
    order = [r.relation for r in candidates] + [RAW]
    chosen = _decided(query, parts, tuple(s for s in order if s in used_sources))
    if histogram:
        return replace(chosen, histogram=chosen.reads_rollups)
    return chosen


def _candidates(query: Query, rollups: Sequence[Rollup], *, histogram: bool) -> list[Rollup]:
    """Rollups of the kind asked for (histograms or not) that hold every field used and
    whose width divides the query's buckets, coarsest (then narrowest) first."""
    used = query.fields() | query.aggregation.fields
    g = query.granularity
    return sorted(
        (
            r
            for r in rollups
            if r.histogram == histogram
            and used <= set(r.dimensions)
            and (g is None or (g.width_s % r.width_s == 0 and g.origin_s % r.width_s == 0))
        ),
        key=lambda r: (-r.width_s, len(r.dimensions)),
    )


def _decided(query: Query, parts: tuple[Part, ...], sources: tuple[str, ...]) -> Plan:
    """The plan, with whether its parts are merged: not when every bucket of the
    answer lies in one part (one part, or every boundary between parts on a bucket
    boundary of the query's granularity)."""
    g = query.granularity
    disjoint = len(parts) == 1 or (
        g is not None and all((p.start - g.origin_s) % g.width_s == 0 for p in parts[1:])
    )
    return Plan(parts, sources, merge=not disjoint)


def _rollup_part(rollup: Rollup, start: int, end: int, query: Query) -> Part:
    """A part read from ``rollup``, with what its SQL must do."""
    g = query.granularity
    # A rollup whose buckets are the query's needs no re-bucketing.
    same = g is not None and rollup.width_s == g.width_s and g.origin_s % rollup.width_s == 0
    # Its rows are the answer's points when it has no dimension but the grouped field
    # (filters on that field keep it so; the planner never sends other filters here).
    # Not for measures derived from other dimensions (a histogram rollup's rows are
    # then its points' bins, one row per bin).
    points = (
        same
        and not query.aggregation.fields
        and (rollup.dimensions == (query.group,) if query.group else not rollup.dimensions)
    )
    return Part(rollup.relation, start, end, points=points, rebucket=not same)


@dataclass(frozen=True)
class _Context:
    query: Query
    now: float
    horizons: Mapping[str, float | None]
    rollups: Sequence[Rollup]


def _around_pending(
    start: int,
    end: int,
    pending: Sequence[tuple[float, float]],
    candidates: Sequence[Rollup],
    ctx: _Context,
) -> list[Part]:
    """Raw parts for the pending stretches inside ``[start, end)`` (from the raw
    horizon on), the candidates' cover for the rest."""
    horizon = ctx.horizons.get(RAW)
    floor = start if horizon is None else max(start, _ceil(horizon, 1))
    inside = join(
        (max(int(s), floor), min(int(-(-e // 1)), end))
        for s, e in pending
        if max(int(s), floor) < min(int(-(-e // 1)), end)
    )
    parts: list[Part] = []
    cursor = start
    for s, e in inside:
        parts.extend(_cover(cursor, s, candidates, ctx))
        parts.extend(_raw(s, e, ctx))
        cursor = e
    parts.extend(_cover(cursor, end, candidates, ctx))
    return parts


def _joined(parts: Sequence[Part]) -> tuple[Part, ...]:
    """Adjacent raw parts as one."""
    out: list[Part] = []
    for p in parts:
        if out and p.source == RAW and out[-1].source == RAW and out[-1].end == p.start:
            out[-1] = Part(RAW, out[-1].start, p.end)
        else:
            out.append(p)
    return tuple(out)


def _cover(start: int, end: int, candidates: Sequence[Rollup], ctx: _Context) -> list[Part]:
    if start >= end:
        return []
    if not candidates:
        return list(_raw(start, end, ctx))
    rollup, finer = candidates[0], candidates[1:]
    w = rollup.width_s
    lo = _ceil(start, w)
    horizon = ctx.horizons.get(rollup.relation)
    if horizon is not None:
        lo = max(lo, _ceil(horizon, w))
    # Rollup buckets are aligned to the epoch (minutes, hours).
    hi = end // w * w
    if lo >= hi:
        return _cover(start, end, finer, ctx)
    return [
        *_cover(start, lo, finer, ctx),
        _rollup_part(rollup, lo, hi, ctx.query),
        *_cover(hi, end, finer, ctx),
    ]


def _raw(start: int, end: int, ctx: _Context) -> tuple[Part, ...]:
    horizon = ctx.horizons.get(RAW)
    if horizon is not None and start < horizon:
        raise Gone(_gone_message(ctx, start, horizon))
    return (Part(RAW, start, end),)


def _ceil(t: float, width: int) -> int:
    return -int(-t // width) * width


def _gone_message(ctx: _Context, start: int, horizon: float) -> str:
    covered = {d for r in ctx.rollups for d in r.dimensions}
    uncovered = ctx.query.fields() - covered
    if ctx.query.aggregation.needs_raw and not ctx.query.approximate:
        why = (
            "exact percentiles and Apdex need the raw events "
            "(precision=approximate answers them from the rollups' histograms)"
        )
    elif uncovered:
        why = f"{', '.join(sorted(uncovered))} can only be answered from the raw events"
    else:
        why = "the rollups cannot answer that part exactly (granularity or range edges finer than their buckets)"
    days = max(0.0, (ctx.now - horizon) / 86400)
    return (
        f"The raw data for that period is past retention: raw events are kept for the last "
        f"{days:.1f} days (from {int(horizon)}), the range starts at {start}, and {why}. "
        "Ask for a later start, or a query the rollups answer."
    )
