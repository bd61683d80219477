"""Idempotency-Keys: claimed in the write transaction with the SHA-256 of the request
body, compared on every later claim, purged when expired.

A key claimed before, within ``idempotency_ttl_s``, answers the earlier claim's count
if the body is the same (a retry: nothing more is stored), and 422
``idempotency_key_reused`` if it differs. Keys claimed before migration 0010 carry no
digest and answer any body with their count, as they did. See docs/ingest.md.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import asyncpg

from ..db import Database, timed
from ..errors import IdempotencyKeyReused


@dataclass(frozen=True)
class IdempotencyKey:
    """A request's Idempotency-Key and the SHA-256 of its body as read (after gunzip).

    The digest is of the bytes, not of the events they decode to: a retry sends the
    same bytes, and the bytes are all a client can be sure it resent. A gzipped and a
    plain body of the same bytes are one request; the same events written with other
    spacing, field order or timestamp precision are another (422).
    """

    key: str
    body_sha256: bytes

    @classmethod
    def of(cls, key: str | None, body: bytes) -> IdempotencyKey | None:
        return None if key is None else cls(key, hashlib.sha256(body).digest())


# Claims an Idempotency-Key for a batch, with its body's digest; no row returned: the
# key was claimed before, by a committed batch or an earlier one of the same
# transaction (a concurrent claim waits for the other transaction to end).
CLAIM_KEY = """
    INSERT INTO idempotency_keys AS k (app_id, key, accepted, body_sha256)
    VALUES ($1, $2, $3, $5)
    ON CONFLICT (app_id, key) DO UPDATE
        SET accepted = EXCLUDED.accepted, body_sha256 = EXCLUDED.body_sha256,
            created_at = now()
        WHERE k.created_at < now() - make_interval(secs => $4)
    RETURNING true
"""
# What the earlier claim answered, and the digest of its body (NULL for a key claimed
# before migration 0010: any body is then taken for a retry, as it was).
CLAIMED = "SELECT accepted, body_sha256 FROM idempotency_keys WHERE app_id = $1 AND key = $2"


async def claim(
    conn: asyncpg.Connection, app: int, key: IdempotencyKey, rows: int, ttl_s: int
) -> int | IdempotencyKeyReused | None:
    """Claim ``key`` for a batch of ``rows`` events in ``conn``'s transaction: None when
    claimed, else the count an earlier claim answered (a retry), or the error for a
    body other than that claim's. A claim made by a concurrent transaction is waited
    for (the primary key), then seen committed or not at all."""
    claimed = await timed(
        conn.fetchval,
        CLAIM_KEY,
        (app, key.key, rows, ttl_s, key.body_sha256),
        "idempotency claim",
    )
    if claimed:
        return None
    earlier = await timed(conn.fetchrow, CLAIMED, (app, key.key), "idempotency count")
    digest = earlier["body_sha256"]
    if digest is not None and digest != key.body_sha256:
        return IdempotencyKeyReused(ttl_s)
    accepted: int = earlier["accepted"]
    return accepted


async def purge_idempotency_keys(db: Database, ttl_s: int) -> int:
    result = await db.execute(
        "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)",
        ttl_s,
        label="purge idempotency keys",
    )
    return int(result.split()[-1])
