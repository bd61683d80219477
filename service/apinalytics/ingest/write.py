"""The write transaction: lock, claim keys, COPY, record the pending stretches, commit.
Written once (``transaction``) for every writer.

The service's requests go through the group writer (``group.py``), which writes the
batches that arrive together in one such transaction; ``store`` writes one batch
alone, and is what the group writer falls back on when a group fails.

The caller answers 200 only after ``store`` returns, i.e. after COMMIT: a batch is
stored whole or not at all. An Idempotency-Key is claimed inside the same
transaction, so a retry racing the first attempt waits for it and then sees it
(``idempotency.py``): a request reusing a key with another body is refused (422) and
stores nothing.

Events older than the raw events' retention horizon are refused: they would be
dropped at the next retention run, and on the Community edition they could never be
refreshed into the rollups (a refresh over dropped raw data deletes rollup rows).

Nothing about the rollups is done on the commit path in either edition: next to its
COPY the transaction records which stretches of time of which apps it touched
(``rollups.pending.record``), the materializer brings the rollups up to date there in
the background (``rollups.materializer``), and until then queries read those
stretches from raw events. Every answer stays exact once the batch is answered 200.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import asyncpg

from .. import retention
from ..db import Database, connection_lost, mapped_errors, timed
from ..errors import CommitOutcomeUnknown, IdempotencyKeyReused, Unauthorized, UserError
from ..rollups import pending
from ..rollups.declared import RAW
from . import idempotency
from .decode import COLUMNS, Row, earliest_us, horizon_us, past_horizon
from .idempotency import IdempotencyKey


@dataclass(frozen=True)
class Stored:
    """What a POST answers (``accepted``) and what it newly stored (``stored``).

    They differ on a replayed Idempotency-Key: the client hears the original count
    again, but nothing new was written, so metrics must not count it twice.
    """

    accepted: int
    replay: bool

    @property
    def stored(self) -> int:
        return 0 if self.replay else self.accepted


# Share-locks the apps' rows until commit, in id order, and reads the raw events'
# retention horizon in the same transaction: deleting an app waits for the batches
# being written for it (and then deletes them too) rather than leaving orphaned
# events, and a retention change commits before or after them. A deleted app's row is
# not returned.
LOCK_APPS = f"""
    SELECT a.id, {retention.horizon_sql("r")} AS horizon
    FROM apps a LEFT JOIN retention r ON r.relation = $2
    WHERE a.id = ANY($1::integer[])
    ORDER BY a.id
    FOR SHARE OF a
"""

# The answer for a batch whose app was deleted after its request authenticated.
UNKNOWN_APP = "Unknown Application ID or wrong key."


def commit_failure(exc: Exception) -> Exception:
    """The answer for batches whose COMMIT failed with ``exc``: a COMMIT the server
    refused stored nothing (its own error); one whose connection was lost may have
    stored everything (``CommitOutcomeUnknown``)."""
    return CommitOutcomeUnknown() if connection_lost(exc) else exc


class CommitFailed(Exception):
    """The COMMIT of a write transaction failed with ``error``; ``answer`` is what
    each of its batches is told (``commit_failure``). Never written again: that could
    store them twice."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error
        self.answer = commit_failure(error)


def refuse_past_horizon(rows: Sequence[Row], horizon: float | None) -> None:
    """Raise the 400 naming the events older than the raw events' retention horizon."""
    if horizon is not None and earliest_us(rows) < horizon_us(horizon):
        raise past_horizon(rows, horizon)


@dataclass(eq=False)
class Batch:
    """One request's validated rows for one app, and its Idempotency-Key."""

    app: int
    rows: Sequence[Row]
    key: IdempotencyKey | None


@dataclass
class Written:
    """What one write transaction did with each of its batches."""

    stored: list[Batch] = field(default_factory=list)
    # Batches whose key was claimed before, with the count that claim answered.
    replays: list[tuple[Batch, int]] = field(default_factory=list)
    # Batches refused before anything was written: app gone, events past the horizon,
    # an Idempotency-Key claimed before with another body.
    refused: list[tuple[Batch, UserError]] = field(default_factory=list)
    # Every row stored, in batch order.
    rows: list[Row] = field(default_factory=list)


async def transaction(
    conn: asyncpg.Connection,
    batches: Sequence[Batch],
    *,
    idempotency_ttl_s: int,
    timeout_s: float,
    on_refused: Callable[[Batch, UserError], None] | None = None,
) -> Written:
    """Write ``batches`` in one transaction: lock their apps (refusing the batches of
    a deleted app or past the raw horizon), claim their Idempotency-Keys (refusing a
    batch whose key was claimed with another body), COPY the rows of the batches
    left, record their apps' pending stretches, COMMIT.

    The lock order of every transaction that writes events: the apps' rows (shared, by
    id), then Idempotency-Keys (by app and key); no rollup row is locked (the
    materializer writes those). Raises ``CommitFailed`` if the COMMIT fails; any
    other failure stored nothing. Driver errors come mapped (``db.mapped_errors``).
    ``on_refused`` hears of each refused batch at once (they are in ``refused`` too).
    """
    committing = False
    try:
        with mapped_errors(timeout_s):
            async with conn.transaction():
                written = Written()
                kept = await _lock_apps(conn, batches, written, on_refused)
                written.stored = await _claim_keys(
                    conn, kept, idempotency_ttl_s, written, on_refused
                )
                written.rows = [row for b in written.stored for row in b.rows]
                if written.rows:
                    copy = partial(
                        conn.copy_records_to_table, records=written.rows, columns=COLUMNS
                    )
                    await timed(copy, "events", (), "copy events")
                    touched: dict[int, list[int]] = {}
                    for b in written.stored:
                        touched.setdefault(b.app, []).extend(row[0] for row in b.rows)
                    await pending.record(conn, touched)
                committing = True
    except Exception as exc:
        if committing:
            raise CommitFailed(exc) from exc
        raise
    return written


async def _lock_apps(
    conn: asyncpg.Connection,
    batches: Sequence[Batch],
    written: Written,
    on_refused: Callable[[Batch, UserError], None] | None,
) -> list[Batch]:
    """Share-lock the apps of the batches that hold rows; the batches not refused."""
    apps = sorted({b.app for b in batches if b.rows})
    horizons: dict[int, float | None] = {}
    if apps:
        found = await timed(conn.fetch, LOCK_APPS, (apps, RAW), "app locks, raw horizon")
        horizons = {r["id"]: r["horizon"] for r in found}
    kept: list[Batch] = []
    for batch in batches:
        if batch.rows:
            try:
                if batch.app not in horizons:
                    raise Unauthorized(UNKNOWN_APP)
                refuse_past_horizon(batch.rows, horizons[batch.app])
            except UserError as exc:
                written.refused.append((batch, exc))
                if on_refused is not None:
                    on_refused(batch, exc)
                continue
        kept.append(batch)
    return kept


async def _claim_keys(
    conn: asyncpg.Connection,
    kept: list[Batch],
    ttl_s: int,
    written: Written,
    on_refused: Callable[[Batch, UserError], None] | None,
) -> list[Batch]:
    """Claim each batch's key in (app, key) order; the batches to store."""
    # Stable sort: of two batches with one key, the earlier claims it.
    keyed = sorted((b for b in kept if b.key is not None), key=_key_order)
    done: set[Batch] = set()
    for batch in keyed:
        assert batch.key is not None
        earlier = await idempotency.claim(conn, batch.app, batch.key, len(batch.rows), ttl_s)
        if earlier is None:
            continue
        done.add(batch)
        if isinstance(earlier, IdempotencyKeyReused):
            written.refused.append((batch, earlier))
            if on_refused is not None:
                on_refused(batch, earlier)
        else:
            written.replays.append((batch, earlier))
    return [b for b in kept if b not in done]


def _key_order(batch: Batch) -> tuple[int, str]:
    return (batch.app, batch.key.key if batch.key else "")


async def store(
    db: Database,
    app: int,
    rows: Sequence[Row],
    *,
    idempotency_key: IdempotencyKey | None,
    idempotency_ttl_s: int,
) -> Stored:
    """Store a validated batch, or recognise a retry of one already stored.

    ``db`` is the ingest pool (``db.unix_us_timestamps``): rows carry their times as
    ints of UNIX microseconds.
    """
    batch = Batch(app, rows, idempotency_key)
    async with db.connection() as conn:
        try:
            written = await transaction(
                conn,
                [batch],
                idempotency_ttl_s=idempotency_ttl_s,
                timeout_s=db.statement_timeout_s,
            )
        except CommitFailed as exc:
            raise exc.answer from exc.error
        for _, error in written.refused:
            raise error
        for _, original in written.replays:
            return Stored(accepted=original, replay=True)
    return Stored(accepted=len(rows), replay=False)
