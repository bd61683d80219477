"""``X-Auth-User`` / ``X-Auth-Key`` authentication for the API.

Unknown app or wrong key: 401. A valid key of the other kind: 403. Keys are never
logged; only the app ID appears in logs.
"""

from __future__ import annotations

from aiohttp import web

from . import apps
from .apps import Credentials, KeyKind
from .errors import Forbidden, Unauthorized
from .keys import DB, REQUEST_APP_ID

_WHAT_FOR = {KeyKind.WRITE: "sending events", KeyKind.READ: "reading data"}


async def require(request: web.Request, kind: KeyKind) -> Credentials:
    app_id = request.headers.get("X-Auth-User", "")
    key = request.headers.get("X-Auth-Key", "")
    if not app_id or not key:
        raise Unauthorized("Send the Application ID in X-Auth-User and a key in X-Auth-Key.")
    async with request.app[DB].connection() as conn:
        creds = await apps.authenticate(conn, app_id, key)
    if creds is None:
        raise Unauthorized("Unknown Application ID or wrong key.")
    if creds.kind is not kind:
        raise Forbidden(
            f"This is the {creds.kind.value} key; {_WHAT_FOR[kind]} needs the {kind.value} key."
        )
    request[REQUEST_APP_ID] = app_id
    return creds
