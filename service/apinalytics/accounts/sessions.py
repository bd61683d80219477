"""Login sessions in an encrypted cookie (aiohttp-session, Fernet); nothing server-side.

The cookie holds the user's internal ID, the CSRF token and, during a login, the
OAuth state. It is HttpOnly (scripts cannot read it), SameSite=Lax (other sites'
forms and fetches do not carry it) and Secure when the service is served over HTTPS.
Fernet authenticates the cookie and stamps its creation time, so a cookie older than
``session_max_age_s`` is refused by the server, whatever the browser keeps.

Several instances behind a load balancer need the same ``APINALYTICS_SESSION_SECRET``;
without one, a development secret is generated once under ``APINALYTICS_HOME``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import aiohttp_session
import asyncpg
from aiohttp import web
from aiohttp.typedefs import Middleware
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from cryptography.fernet import Fernet

from .. import apps
from ..apps import AppInfo, Credentials, KeyKind
from ..errors import NotFound
from ..keys import DB
from ..settings import Settings

COOKIE_NAME = "apinalytics_session"
SECRET_FILE = "session_secret"
USER_ID = "user_id"


def secret(settings: Settings) -> str:
    """The Fernet key: from settings, else the development one kept under ``home``."""
    if settings.session_secret:
        key = settings.session_secret
        try:
            Fernet(key)
        except ValueError as exc:
            raise ValueError(
                "APINALYTICS_SESSION_SECRET must be 32 url-safe base64-encoded bytes; "
                "make one with: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'"
            ) from exc
        return key
    return _development_secret(settings.home / SECRET_FILE)


def _development_secret(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written aside and hard-linked into place: two processes starting at once end up
    # with the one secret that won, never with a half-written file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(Fernet.generate_key().decode())
    try:
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink()
    return path.read_text().strip()


def cookie_secure(settings: Settings) -> bool:
    return settings.cookie_secure or (settings.public_url or "").startswith("https://")


class _CookieStorage(EncryptedCookieStorage):
    """aiohttp-session's encrypted cookie, where a cookie that is not even text (bytes
    that are not UTF-8) or that decrypts to something no instance of ours wrote is no
    session, as a cookie that fails to decrypt already is, rather than an error."""

    async def load_session(self, request: web.Request) -> aiohttp_session.Session:
        try:
            return await super().load_session(request)
        except (ValueError, TypeError, KeyError):  # UnicodeError and JSON errors included
            return aiohttp_session.Session(None, data=None, new=True, max_age=self.max_age)


def middleware(settings: Settings) -> Middleware:
    storage = _CookieStorage(
        secret(settings),
        cookie_name=COOKIE_NAME,
        max_age=settings.session_max_age_s,
        httponly=True,
        samesite="Lax",
        secure=cookie_secure(settings),
    )
    mw: Middleware = aiohttp_session.session_middleware(storage)
    return mw


async def user_id(request: web.Request) -> int | None:
    """The logged-in user's internal ID, or None."""
    session = await aiohttp_session.get_session(request)
    uid = session.get(USER_ID)
    return uid if isinstance(uid, int) and 0 < uid < 2**63 else None


async def log_in(request: web.Request, uid: int) -> None:
    # A fresh session: nothing of the anonymous one (an old CSRF token) survives login.
    session = await aiohttp_session.new_session(request)
    session[USER_ID] = uid


async def log_out(request: web.Request) -> None:
    session = await aiohttp_session.get_session(request)
    session.invalidate()


async def owned_app(conn: asyncpg.Connection, app_id: str, uid: int) -> AppInfo:
    """The app if this user owns it; 404 alike for a missing app and another's app,
    so nobody learns which Application IDs exist."""
    app = await apps.get(conn, app_id)
    if app is None or app.owner_id != uid:
        raise NotFound(f"You have no application {app_id!r}.")
    return app


async def read_credentials(request: web.Request, app_id: str) -> Credentials | None:
    """Read access to ``app_id`` from the logged-in session (the dashboard's way in),
    None without a logged-in session, 404 when the app is not the user's."""
    uid = await user_id(request)
    if uid is None:
        return None
    async with request.app[DB].connection() as conn:
        app = await owned_app(conn, app_id, uid)
    return Credentials(app.id, app.app_id, KeyKind.READ)
