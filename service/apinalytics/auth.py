"""``X-Auth-User`` / ``X-Auth-Key`` authentication for the API.

Unknown app or wrong key: 401. A valid key of the other kind: 403. Keys are never
logged; only the app ID appears in logs.

Reads may instead come from a logged-in session (the dashboard): ``X-Auth-User``
without ``X-Auth-Key`` reads the app if the session's user owns it, and is a 404 if
not. Sessions never authorize writes. This is safe to allow alongside the API's
``Access-Control-Allow-Origin: *`` because that header never admits credentials: a
browser does not expose a credentialed cross-origin response under it, and the
SameSite=Lax cookie is not sent with other sites' fetches anyway.
"""

from __future__ import annotations

from aiohttp import web

from . import apps
from .accounts import sessions
from .apps import Credentials, KeyKind
from .errors import Forbidden, Unauthorized
from .keys import DB, INGEST_DB, REQUEST_APP_ID

_WHAT_FOR = {KeyKind.WRITE: "sending events", KeyKind.READ: "reading data"}


async def require(request: web.Request, kind: KeyKind) -> Credentials:
    app_id = request.headers.get("X-Auth-User", "")
    key = request.headers.get("X-Auth-Key", "")
    if not app_id.isascii():
        # Application IDs are URL-safe ASCII. Other bytes reach us as lone surrogates
        # (aiohttp's surrogateescape), which no query parameter can carry.
        raise Unauthorized("Unknown Application ID or wrong key.")
    if app_id and not key and kind is KeyKind.READ:
        owned = await sessions.read_credentials(request, app_id)
        if owned is not None:
            request[REQUEST_APP_ID] = app_id
            return owned
    if not app_id or not key:
        raise Unauthorized("Send the Application ID in X-Auth-User and a key in X-Auth-Key.")
    # Writes check their key on the ingest path's own pool: ingest never waits for a
    # connection that queries hold.
    db = request.app[INGEST_DB if kind is KeyKind.WRITE else DB]
    async with db.connection() as conn:
        creds = await apps.authenticate(conn, app_id, key)
    if creds is None:
        raise Unauthorized("Unknown Application ID or wrong key.")
    if creds.kind is not kind:
        raise Forbidden(
            f"This is the {creds.kind.value} key; {_WHAT_FOR[kind]} needs the {kind.value} key."
        )
    request[REQUEST_APP_ID] = app_id
    return creds
