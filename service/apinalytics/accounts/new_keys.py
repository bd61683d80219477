"""New keys, shown once: kept in the session from the POST that made them until the
keys page shows them, and the ready-to-paste examples that use them.

The session is the encrypted, authenticated, HttpOnly cookie of ``sessions.py``: the
keys never travel in a URL, and the cookie the keys page answers with no longer holds
them. ``take`` removes them whether or not they are for the app asked for, so keys
are never shown twice.
"""

from __future__ import annotations

from aiohttp_session import Session

from ..apps import NewApp

# The session entry: the NewApp's keys and whether the app was just created.
KEY = "new_keys"
# What the app's page says when its keys page is visited again.
SHOWN_ONCE = (
    "The keys of this application were shown once, when they were made, and are not "
    "kept: rotate a key to get a new one."
)


def keep(session: Session, new: NewApp, *, created: bool) -> None:
    session[KEY] = {
        "app_id": new.app_id,
        "write_key": new.write_key,
        "read_key": new.read_key,
        "created": created,
    }


def take(session: Session, app_id: str, name: str) -> tuple[NewApp, bool] | None:
    """The keys kept for ``app_id`` (and whether it was just created), once; None if
    none are kept for it."""
    kept = session.pop(KEY, None)
    if not (isinstance(kept, dict) and kept.get("app_id") == app_id):
        return None
    new = NewApp(app_id, name, kept.get("write_key"), kept.get("read_key"))
    return new, bool(kept.get("created"))


def examples(base: str, new: NewApp) -> dict[str, str]:
    """Ready-to-paste curl commands with the keys just shown; ``base`` is the service's
    public address (``pages.base_url``)."""
    out: dict[str, str] = {"base": base}
    if new.write_key:
        out["send"] = (
            f"curl -X POST '{base}/1/events/' \\\n"
            "  -H 'Content-Type: application/json' \\\n"
            f"  -H 'X-Auth-User: {new.app_id}' \\\n"
            f"  -H 'X-Auth-Key: {new.write_key}' \\\n"
            """  -d '[{"timestamp": '"$(date +%s)"', "consumer_id": "alice", "method": "GET", """
            """"url": "/hello?x=1", "function": "hello", "response_us": 1200, """
            """"status_code": 200}]'"""
        )
    if new.read_key:
        out["query"] = (
            f'curl "{base}/1/timeseries/$(( $(date +%s) - 3600 ))/$(date +%s)/'
            '?granularity=minute" \\\n'
            f"  -H 'X-Auth-User: {new.app_id}' \\\n"
            f"  -H 'X-Auth-Key: {new.read_key}'"
        )
    return out
