"""The write path of one batch: one transaction, COPY, rollup upkeep, then commit.

The service's requests go through the group writer (``group.py``), which writes the
batches that arrive together in one such transaction; ``store`` writes one batch
alone, and is what the group writer falls back on when a group fails.

The caller answers 200 only after ``store`` returns, i.e. after COMMIT: a batch is
stored whole or not at all. An Idempotency-Key is claimed inside the same
transaction, so a retry racing the first attempt waits for it and then sees it.

Events older than the raw events' retention horizon are refused: they would be
dropped at the next retention run, and on the Community edition they could never be
refreshed into the rollups (a refresh over dropped raw data deletes rollup rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..db import Database, connection_lost, timed
from ..errors import CommitOutcomeUnknown, Unauthorized
from ..rollups import RAW
from . import rollups
from .decode import COLUMNS, Row, earliest_us, horizon_us, past_horizon


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
LOCK_APPS = """
    SELECT a.id, extract(epoch FROM greatest(
        r.dropped_before, now() - make_interval(secs => r.keep_s)))::float8 AS horizon
    FROM apps a LEFT JOIN retention r ON r.relation = $2
    WHERE a.id = ANY($1::integer[])
    ORDER BY a.id
    FOR SHARE OF a
"""

# Claims an Idempotency-Key for a batch; no row returned: the key was claimed before,
# by a committed batch or an earlier one of the same transaction (a concurrent claim
# waits for the other transaction to end).
CLAIM_KEY = """
    INSERT INTO idempotency_keys AS k (app_id, key, accepted) VALUES ($1, $2, $3)
    ON CONFLICT (app_id, key) DO UPDATE
        SET accepted = EXCLUDED.accepted, created_at = now()
        WHERE k.created_at < now() - make_interval(secs => $4)
    RETURNING true
"""
CLAIMED_COUNT = "SELECT accepted FROM idempotency_keys WHERE app_id = $1 AND key = $2"

# The answer for a batch whose app was deleted after its request authenticated.
UNKNOWN_APP = "Unknown Application ID or wrong key."


class AfterCommitFailed(Exception):
    """The batch is committed; the rollup refresh that follows COMMIT failed with
    ``error`` (the caller answers and retries it: ``GroupWriter``)."""

    def __init__(self, rows: Sequence[Row], error: Exception) -> None:
        super().__init__(str(error))
        self.rows = rows
        self.error = error


def commit_failure(exc: Exception) -> Exception:
    """The answer for batches whose COMMIT failed with ``exc``: a COMMIT the server
    refused stored nothing (its own error); one whose connection was lost may have
    stored everything (``CommitOutcomeUnknown``)."""
    return CommitOutcomeUnknown() if connection_lost(exc) else exc


def refuse_past_horizon(rows: Sequence[Row], horizon: float | None) -> None:
    """Raise the 400 naming the events older than the raw events' retention horizon."""
    if horizon is not None and earliest_us(rows) < horizon_us(horizon):
        raise past_horizon(rows, horizon)


async def store(
    db: Database,
    app: int,
    rows: Sequence[Row],
    *,
    mode: str,
    idempotency_key: str | None,
    idempotency_ttl_s: int,
) -> Stored:
    """Store a validated batch, or recognise a retry of one already stored.

    ``db`` is the ingest pool (``db.unix_us_timestamps``): rows carry their times as
    ints of UNIX microseconds.
    """
    async with db.connection() as conn:
        committing = False
        try:
            async with conn.transaction():
                if rows:
                    found = await timed(
                        conn.fetchrow, LOCK_APPS, ([app], RAW), "app lock, raw horizon"
                    )
                    if found is None:
                        raise Unauthorized(UNKNOWN_APP)
                    refuse_past_horizon(rows, found["horizon"])
                if idempotency_key is not None:
                    claimed = await timed(
                        conn.fetchval,
                        CLAIM_KEY,
                        (app, idempotency_key, len(rows), idempotency_ttl_s),
                        "idempotency claim",
                    )
                    if not claimed:
                        original: int = await conn.fetchval(CLAIMED_COUNT, app, idempotency_key)
                        return Stored(accepted=original, replay=True)
                if rows:
                    await conn.copy_records_to_table("events", records=rows, columns=COLUMNS)
                    await rollups.upkeep_in_transaction(conn, mode, rows)
                committing = True
        except Exception as exc:
            if committing:
                raise commit_failure(exc) from exc
            raise
        if rows:
            try:
                await rollups.after_commit(conn, mode, rows)
            except Exception as exc:
                raise AfterCommitFailed(rows, exc) from exc
    return Stored(accepted=len(rows), replay=False)


async def purge_idempotency_keys(db: Database, ttl_s: int) -> int:
    result = await db.execute(
        "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)",
        ttl_s,
        label="purge idempotency keys",
    )
    return int(result.split()[-1])
