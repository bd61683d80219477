"""The rollups, declared once as data.

Each rollup holds, per time bucket, app and combination of its ``dimensions``, what
can be re-aggregated exactly: ``calls`` (count), ``sum_us``, ``min_us``, ``max_us`` of
``response_us``. Columns of every rollup relation, in either mode:

    bucket timestamptz, app_id integer, <dimension columns...>,
    calls bigint, sum_us bigint, min_us bigint, max_us bigint

In the Community mode they are continuous aggregates (each built on ``built_from``);
in the Apache mode, tables the ingest path keeps up to date. Adding a narrower rollup
(say per app and function only) is one migration plus one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass

RAW = "events"

# Dimensions that rollups may cover; url and data are too high-cardinality.
DIMENSIONS = ("consumer_id", "method", "function", "status_code")

# PostgreSQL type of each dimension column, as in the events table.
DIMENSION_TYPES = {
    "consumer_id": "text",
    "method": "text",
    "function": "text",
    "status_code": "smallint",
}


@dataclass(frozen=True)
class Rollup:
    relation: str
    width_s: int
    dimensions: tuple[str, ...]
    # What it is aggregated from: raw events, or a finer rollup (Community: hierarchical).
    built_from: str

    @property
    def key_columns(self) -> tuple[str, ...]:
        """Grouping columns in primary-key order, which is also the upsert lock order."""
        return ("app_id", "bucket", *self.dimensions)


ROLLUPS: tuple[Rollup, ...] = (
    Rollup("events_1m", 60, DIMENSIONS, RAW),
    Rollup("events_1h", 3600, DIMENSIONS, "events_1m"),
)
