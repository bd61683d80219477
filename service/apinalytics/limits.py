"""Fair shares of one process among applications (docs/limits.md).

- Queries (time series and exports): at most ``max_queries_per_app`` running at once
  per application; the next one is a 429 at once, not a wait.
- Raw reads (percentiles, forced raw plans): at most ``max_raw_reads`` at once in the
  process, so that a storm of them leaves connections of the query pool to rollup
  reads; one that waits ``busy_wait_s`` for its turn is a 503 overloaded.
- Ingest: a token bucket per application, ``ingest_rate_per_app`` requests per second
  up to a burst of ``ingest_burst_per_app``; over it, a 429 saying when to come back.

Counts are per process: with ``--workers N`` an application's share is N times these.
State is a few numbers per application seen, forgotten once they are back to rest.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from .errors import InvalidQuery, Overloaded, QueryTimeout, RateLimited, UserError
from .query.model import Query
from .settings import Settings


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class Limits:
    settings: Settings
    _queries: dict[str, int] = field(default_factory=dict)
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _raw: asyncio.Semaphore | None = None

    @asynccontextmanager
    async def query(self, app_id: str) -> AsyncIterator[None]:
        """One query of ``app_id`` running, or 429 if it has its share running already."""
        limit = self.settings.max_queries_per_app
        running = self._queries.get(app_id, 0)
        if running >= limit:
            raise RateLimited(f"{limit} queries already running", limit)
        self._queries[app_id] = running + 1
        try:
            yield
        finally:
            left = self._queries[app_id] - 1
            if left:
                self._queries[app_id] = left
            else:
                del self._queries[app_id]

    @asynccontextmanager
    async def raw_read(self) -> AsyncIterator[None]:
        """A turn to read raw events, or 503 overloaded after ``busy_wait_s``."""
        if self._raw is None:
            self._raw = asyncio.Semaphore(self.settings.max_raw_reads)
        try:
            await asyncio.wait_for(self._raw.acquire(), self.settings.busy_wait_s)
        except TimeoutError:
            raise Overloaded(
                f"{self.settings.max_raw_reads} reads of raw events are running"
            ) from None
        try:
            yield
        finally:
            self._raw.release()

    def ingest(self, app_id: str, now: float | None = None) -> None:
        """Take a token of ``app_id``'s bucket, or 429 saying when one is back."""
        rate = self.settings.ingest_rate_per_app
        burst = self.settings.ingest_burst_per_app
        t = time.monotonic() if now is None else now
        bucket = self._buckets.get(app_id)
        if bucket is None:
            if len(self._buckets) > 10_000:
                self._forget_full(t)
            bucket = self._buckets[app_id] = _Bucket(burst, t)
        bucket.tokens = min(burst, bucket.tokens + (t - bucket.at) * rate)
        bucket.at = t
        if bucket.tokens < 1:
            wait = max(1, math.ceil((1 - bucket.tokens) / rate))
            raise RateLimited(
                f"more than {rate:g} ingest requests per second", burst, retry_after=wait
            )
        bucket.tokens -= 1

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled: they hold nothing a new one would not."""
        rate, burst = self.settings.ingest_rate_per_app, self.settings.ingest_burst_per_app
        for app_id, b in list(self._buckets.items()):
            if b.tokens + (now - b.at) * rate >= burst:
                del self._buckets[app_id]


def check_includes(values: list[str], limit: int) -> list[str]:
    """``values`` of ``include``, or 400 if there are more than ``limit``: 4,000 of
    them once took 19.5 s to plan and run before their 503."""
    given = [v for v in values if v != ""]
    if len(given) > limit:
        raise InvalidQuery(
            "include",
            f"at most {limit} values per request, not {len(given)}",
            code="too_many_includes",
        )
    return values


def groups_allowed(query: Query, max_groups: int, max_points: int) -> int:
    """How many groups an answer of ``query`` may have: ``max_groups``, and fewer if
    its buckets would take it past ``max_points`` points."""
    buckets = query.granularity.buckets(query.start, query.end) if query.granularity else 1
    return max(1, min(max_groups, max_points // buckets))


def too_many_groups(allowed: int, max_groups: int, max_points: int) -> UserError:
    why = (
        f"more than {allowed} groups"
        if allowed == max_groups
        else f"more than {allowed} groups, and so more than {max_points} points"
    )
    return InvalidQuery(
        "group",
        f"the answer would have {why}: filter with include=, group by a field with "
        "fewer values, or ask for fewer buckets",
        code="too_many_groups",
    )


@asynccontextmanager
async def bounded(timeout_s: float) -> AsyncIterator[None]:
    """Everything inside, planning and every statement, within ``timeout_s``: the
    statement timeout bounds one statement, not a request."""
    try:
        async with asyncio.timeout(timeout_s):
            yield
    except TimeoutError:
        raise QueryTimeout(timeout_s) from None
