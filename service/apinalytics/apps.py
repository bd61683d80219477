"""Applications and their keys: create, list, rotate, delete, authenticate.

Keys are 256-bit random URL-safe strings, shown once and stored only as SHA-256
digests. A prefix tells a write key from a read key at a glance (and lets secret
scanners recognise them); it carries no authority of its own.

Clients written for the 2014 service treat keys as padded base64: its dashboard appends
``=`` until a key's length is a multiple of four. No key we issue holds an ``=``, so up
to two trailing ones (base64's padding) are taken off before the digest is compared
(docs/compatibility.md); any other character appended still makes a wrong key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

import asyncpg

from . import db
from .rollups import RAW, ROLLUPS

WRITE_PREFIX = "apw_"
READ_PREFIX = "apr_"


class KeyKind(Enum):
    WRITE = "write"
    READ = "read"


@dataclass(frozen=True)
class NewApp:
    """An app as created or re-keyed: the only moment its keys are known in full."""

    app_id: str
    name: str
    write_key: str | None
    read_key: str | None


@dataclass(frozen=True)
class AppInfo:
    id: int
    app_id: str
    name: str
    owner_id: int | None
    created_at: datetime


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


# Letters and digits only: an ID starting with "-" would read as an option on a
# command line, and "_" or "-" make IDs awkward to double-click and copy.
_ID_ALPHABET = string.ascii_letters + string.digits
_ID_LENGTH = 16  # 62^16, about 95 bits: unguessable, though it is not a secret


def new_public_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_LENGTH))


def new_key(kind: KeyKind) -> str:
    return (WRITE_PREFIX if kind is KeyKind.WRITE else READ_PREFIX) + secrets.token_urlsafe(32)


# base64 pads with at most two "=".
MAX_KEY_PADDING = 2


def unpadded(key: str) -> str:
    """``key`` without base64 padding: up to ``MAX_KEY_PADDING`` trailing ``=`` removed.
    More than that is no padding, and the key is left as sent (it matches no key)."""
    stripped = key.rstrip("=")
    return stripped if len(key) - len(stripped) <= MAX_KEY_PADDING else key


def key_matches(key: str, stored_digest: bytes) -> bool:
    return hmac.compare_digest(digest(key), stored_digest)


MAX_NAME = 100


def checked_name(name: str) -> str:
    """An application's name, trimmed: 1 to ``MAX_NAME`` characters, no control
    characters; ValueError says what is wrong."""
    name = name.strip()
    if not 0 < len(name) <= MAX_NAME:
        raise ValueError(f"The application name must be 1 to {MAX_NAME} characters.")
    if any(unicodedata.category(c) == "Cc" for c in name):
        raise ValueError("The application name must not contain control characters.")
    return name


async def create(conn: asyncpg.Connection, name: str, owner_id: int | None = None) -> NewApp:
    """A new app named ``name`` (``checked_name``: ValueError for an unfit one)."""
    name = checked_name(name)
    app = NewApp(new_public_id(), name, new_key(KeyKind.WRITE), new_key(KeyKind.READ))
    assert app.write_key and app.read_key
    await db.execute(
        conn,
        "create app",
        """
        INSERT INTO apps (public_id, name, owner_id, write_key_digest, read_key_digest)
        VALUES ($1, $2, $3, $4, $5)
        """,
        app.app_id,
        name,
        owner_id,
        digest(app.write_key),
        digest(app.read_key),
    )
    return app


async def list_apps(conn: asyncpg.Connection, owner_id: int | None = None) -> list[AppInfo]:
    rows = await db.fetch(
        conn,
        "list apps",
        """
        SELECT id, public_id, name, owner_id, created_at FROM apps
        WHERE $1::bigint IS NULL OR owner_id = $1
        ORDER BY created_at, id
        """,
        owner_id,
    )
    return [
        AppInfo(r["id"], r["public_id"], r["name"], r["owner_id"], r["created_at"]) for r in rows
    ]


async def get(conn: asyncpg.Connection, app_id: str) -> AppInfo | None:
    if not app_id.isascii() or "\x00" in app_id:
        return None  # Application IDs are URL-safe ASCII; text cannot hold a NUL anyway
    r = await db.fetchrow(
        conn,
        "get app",
        "SELECT id, public_id, name, owner_id, created_at FROM apps WHERE public_id = $1",
        app_id,
    )
    return (
        AppInfo(r["id"], r["public_id"], r["name"], r["owner_id"], r["created_at"]) if r else None
    )


async def rotate(conn: asyncpg.Connection, app_id: str, kinds: set[KeyKind]) -> NewApp | None:
    """New keys of the given kinds; the old ones stop working with the commit."""
    write = new_key(KeyKind.WRITE) if KeyKind.WRITE in kinds else None
    read = new_key(KeyKind.READ) if KeyKind.READ in kinds else None
    name = await db.fetchval(
        conn,
        "rotate keys",
        """
        UPDATE apps SET
            write_key_digest = COALESCE($2, write_key_digest),
            read_key_digest = COALESCE($3, read_key_digest)
        WHERE public_id = $1
        RETURNING name
        """,
        app_id,
        digest(write) if write else None,
        digest(read) if read else None,
    )
    if name is None:
        return None
    return NewApp(app_id, name, write, read)


# Relations that hold per-app rows: the raw events and every declared rollup, so that
# deleting an app deletes everything of it. Names are fixed identifiers, never input.
PER_APP_RELATIONS: list[str] = [RAW, *(r.relation for r in ROLLUPS)]


async def delete(conn: asyncpg.Connection, app_id: str) -> bool:
    """Delete an app and all of its data, in the caller's transaction."""
    internal = await db.fetchval(
        conn, "lock app", "SELECT id FROM apps WHERE public_id = $1 FOR UPDATE", app_id
    )
    if internal is None:
        return False
    for relation in await deletable_relations(conn):
        await db.execute(
            conn,
            f"delete app from {relation}",
            f"DELETE FROM {relation} WHERE app_id = $1",
            internal,
        )
    await db.execute(conn, "delete app", "DELETE FROM apps WHERE id = $1", internal)
    return True


async def deletable_relations(conn: asyncpg.Connection) -> list[str]:
    """The tables to delete an app's rows from, raw events first, then finer rollups.

    Tables and hypertables as they are; a continuous aggregate (Community mode) through
    its materialization hypertable. Not through a refresh: a refresh over a range whose
    raw chunks retention dropped would delete every app's rollup rows there. Deleting
    the materialized rows of the minute aggregate logs an invalidation for the hour
    one, whose next refresh then agrees with what is left; the real-time part of
    each aggregate reads sources the app's rows are already gone from.
    """
    out = []
    for relation in PER_APP_RELATIONS:
        row = await db.fetchrow(
            conn,
            f"kind of {relation}",
            """
            SELECT c.relkind::text AS kind,
                   CASE WHEN ca.view_name IS NOT NULL THEN
                       format('%I.%I', ca.materialization_hypertable_schema,
                              ca.materialization_hypertable_name)
                   END AS materialized
            FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            LEFT JOIN timescaledb_information.continuous_aggregates ca
                ON ca.view_schema = n.nspname AND ca.view_name = c.relname
            WHERE c.oid = to_regclass($1)
            """,
            relation,
        )
        if row is None:
            continue
        if row["kind"] == "r":
            out.append(relation)
        elif row["kind"] == "v" and row["materialized"] is not None:
            out.append(row["materialized"])
    return out


@dataclass(frozen=True)
class Credentials:
    app: int  # internal id
    app_id: str  # public id
    kind: KeyKind


async def authenticate(conn: asyncpg.Connection, app_id: str, key: str) -> Credentials | None:
    """Which kind of key this is for the app, or None if the app or key is unknown
    (``key`` with or without base64 padding: ``unpadded``)."""
    key = unpadded(key)
    row = await db.fetchrow(
        conn,
        "authenticate",
        "SELECT id, write_key_digest, read_key_digest FROM apps WHERE public_id = $1",
        app_id,
    )
    if row is None:
        # Compare anyway so an unknown app costs the same as a wrong key.
        hmac.compare_digest(digest(key), digest(""))
        return None
    # Both comparisons always run: timing does not reveal which kind matched.
    is_write = key_matches(key, row["write_key_digest"])
    is_read = key_matches(key, row["read_key_digest"])
    if is_write:
        return Credentials(row["id"], app_id, KeyKind.WRITE)
    if is_read:
        return Credentials(row["id"], app_id, KeyKind.READ)
    return None
