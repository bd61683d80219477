"""Users: one row per GitHub account, keyed by the GitHub user ID (logins change)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from .. import db
from .oauth import GitHubUser


@dataclass(frozen=True)
class User:
    id: int
    github_id: int
    login: str
    name: str | None
    created_at: datetime
    last_login_at: datetime


_COLUMNS = "id, github_id, login, name, created_at, last_login_at"


def _user(row: asyncpg.Record) -> User:
    return User(
        row["id"],
        row["github_id"],
        row["login"],
        row["name"],
        row["created_at"],
        row["last_login_at"],
    )


async def record_login(conn: asyncpg.Connection, gh: GitHubUser) -> User:
    """Create the user at the first login; later logins refresh login, name and time."""
    row = await db.fetchrow(
        conn,
        "record login",
        f"""
        INSERT INTO users (github_id, login, name) VALUES ($1, $2, $3)
        ON CONFLICT (github_id) DO UPDATE
            SET login = EXCLUDED.login, name = EXCLUDED.name, last_login_at = now()
        RETURNING {_COLUMNS}
        """,
        gh.id,
        gh.login,
        gh.name,
    )
    return _user(row)


async def get(conn: asyncpg.Connection, uid: int) -> User | None:
    row = await db.fetchrow(conn, "get user", f"SELECT {_COLUMNS} FROM users WHERE id = $1", uid)
    return _user(row) if row else None
