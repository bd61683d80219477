"""Retention of raw events and rollups."""

from __future__ import annotations

import asyncpg


async def horizons(conn: asyncpg.Connection) -> dict[str, float | None]:
    """Per relation, the UNIX time from which its data is complete (None: since always).

    The planner never reads a relation before its horizon.
    """
    return {}
