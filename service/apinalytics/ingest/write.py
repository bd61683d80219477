"""The write path: one transaction per batch, COPY, rollup upkeep, then commit.

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

from ..db import Database, timed
from ..errors import Unauthorized
from ..rollups import RAW
from . import rollups
from .decode import COLUMNS, EPOCH, Row, past_horizon


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


async def store(
    db: Database,
    app: int,
    rows: Sequence[Row],
    *,
    mode: str,
    idempotency_key: str | None,
    idempotency_ttl_s: int,
) -> Stored:
    """Store a validated batch, or recognise a retry of one already stored."""
    async with db.transaction() as conn:
        if rows:
            # The app's row is share-locked until commit, so deleting the app waits for
            # this batch (and then deletes it too) rather than leaving orphaned events.
            # The raw horizon is read in the same transaction: a retention change
            # commits before or after it.
            found = await timed(
                conn.fetchrow,
                """
                SELECT extract(epoch FROM greatest(
                    r.dropped_before, now() - make_interval(secs => r.keep_s)))::float8
                    AS horizon
                FROM apps a LEFT JOIN retention r ON r.relation = $2
                WHERE a.id = $1
                FOR SHARE OF a
                """,
                (app, RAW),
                "app lock, raw horizon",
            )
            if found is None:
                raise Unauthorized("Unknown Application ID or wrong key.")
            horizon = found["horizon"]
            if horizon is not None and (min(r[0] for r in rows) - EPOCH).total_seconds() < horizon:
                raise past_horizon(rows, horizon)
        if idempotency_key is not None:
            claimed = await timed(
                conn.fetchval,
                """
                INSERT INTO idempotency_keys AS k (app_id, key, accepted) VALUES ($1, $2, $3)
                ON CONFLICT (app_id, key) DO UPDATE
                    SET accepted = EXCLUDED.accepted, created_at = now()
                    WHERE k.created_at < now() - make_interval(secs => $4)
                RETURNING true
                """,
                (app, idempotency_key, len(rows), idempotency_ttl_s),
                "idempotency claim",
            )
            if not claimed:
                original: int = await conn.fetchval(
                    "SELECT accepted FROM idempotency_keys WHERE app_id = $1 AND key = $2",
                    app,
                    idempotency_key,
                )
                return Stored(accepted=original, replay=True)
        if rows:
            await conn.copy_records_to_table("events", records=rows, columns=COLUMNS)
            await rollups.upkeep_in_transaction(conn, mode, rows)
    if rows:
        await rollups.after_commit(db, mode, rows)
    return Stored(accepted=len(rows), replay=False)


async def purge_idempotency_keys(db: Database, ttl_s: int) -> int:
    result = await db.execute(
        "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)",
        ttl_s,
        label="purge idempotency keys",
    )
    return int(result.split()[-1])
