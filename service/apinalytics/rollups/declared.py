"""The rollups, declared once as data.

Each rollup holds, per time bucket, app and combination of its ``dimensions``, the
measures of ``measures.MEASURES`` (``calls``, ``sum_us``, ``min_us``, ``max_us`` of
``response_us``), which re-aggregate exactly. Columns of every rollup relation, in
either edition:

    bucket timestamptz, app_id integer, <dimension columns...>, <measure columns...>

In the Community edition they are continuous aggregates (each built on
``built_from``); in the Apache edition, tables the ingest path keeps up to date.
Adding a rollup (like the per-app minute one and the per-app, per-function and
per-consumer hour ones) is one migration pair plus one entry here; a rollup of a new
width gets its own retention option (``--<width name>``) with no other change.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import schema
from ..measures import BY_COLUMN, HISTOGRAM, MEASURES, VALUE, Measure

RAW = "events"

# Dimensions that rollups may cover (schema.EVENT: url and data are too
# high-cardinality), and their PostgreSQL types, as in the events table.
DIMENSIONS = schema.DIMENSIONS
DIMENSION_TYPES = schema.DIMENSION_TYPES

# A bucket width's name in the retention options (--minute, --hour, ...).
_WIDTH_NAMES = {60: "minute", 3600: "hour", 86400: "day", 7 * 86400: "week"}


@dataclass(frozen=True)
class Rollup:
    relation: str
    width_s: int
    dimensions: tuple[str, ...]
    # What it is aggregated from: raw events, or a finer rollup (Community: hierarchical).
    built_from: str
    # A histogram rollup (measures.HISTOGRAM): besides its dimensions it is keyed by
    # ``bin`` and holds one measure, ``calls``; it answers only approximate
    # percentiles and Apdex, and nothing else reads it.
    histogram: bool = False

    @property
    def key_columns(self) -> tuple[str, ...]:
        """Grouping columns in primary-key order, which is also the upsert lock order."""
        return ("app_id", "bucket", *self.groups)

    @property
    def groups(self) -> tuple[str, ...]:
        """Its grouping columns after app and bucket: dimensions (and the bin)."""
        return (*self.dimensions, "bin") if self.histogram else self.dimensions

    def group_exprs(self) -> tuple[str, ...]:
        """``groups`` as expressions over the rows of ``built_from``."""
        if self.histogram and self.built_from == RAW:
            return (*self.dimensions, HISTOGRAM.bin_of(VALUE))
        return self.groups

    @property
    def measures(self) -> tuple[Measure, ...]:
        """Its measure columns, in column order."""
        return (BY_COLUMN["calls"],) if self.histogram else MEASURES

    @property
    def width_name(self) -> str:
        """``minute``, ``hour``, ... (``<n>s`` for a width without a name)."""
        return _WIDTH_NAMES.get(self.width_s, f"{self.width_s}s")


# In dependency order (every rollup after the one it is built from): the ingest path
# upserts them (Apache) and refreshes them (Community) in this order, which is also the
# one lock order of every batch; rebuild and app deletion follow it too.
#
# The narrow hour rollups serve the common panels that group by at most one of their
# dimensions: on the benchmark data (docs/benchmarks.md) events_1h holds 0.24 rows per
# raw event, and these hold 7,210 (per app), 199,358 (per function) and 345,938 (per
# consumer) rows against its 2,424,395, which takes the 7- and 30-day panels from
# 150-500 ms to 2-50 ms of SQL. events_1m_app does the same for minutes (events_1m holds
# 0.81 rows per raw event there: an hour of the busiest app is about 5,000 of its rows
# and 60 of events_1m_app's). It comes last: every batch of an app upserts the same
# current row of it, a lock best taken by the transaction's last upsert.
#
# The histogram rollups (migration 0009) hold hours per app and function, and per app
# (from the former); see docs/retention.md for their size per event and
# docs/rollups.md for why no minute histogram. They come before events_1m_app, whose
# lock stays the transaction's last.
ROLLUPS: tuple[Rollup, ...] = (
    Rollup("events_1m", 60, DIMENSIONS, RAW),
    Rollup("events_1h", 3600, DIMENSIONS, "events_1m"),
    Rollup("events_1h_app", 3600, (), "events_1h"),
    Rollup("events_1h_function", 3600, ("function",), "events_1h"),
    Rollup("events_1h_consumer", 3600, ("consumer_id",), "events_1h"),
    Rollup("events_1h_function_hist", 3600, ("function",), RAW, histogram=True),
    Rollup("events_1h_app_hist", 3600, (), "events_1h_function_hist", histogram=True),
    Rollup("events_1m_app", 60, (), "events_1m"),
)
