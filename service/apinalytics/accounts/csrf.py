"""CSRF tokens for the pages' forms (synchronizer token kept in the session).

SameSite=Lax already keeps the session cookie off other sites' POSTs; the token
makes every state-changing form safe without relying on the browser for it.
"""

from __future__ import annotations

import hmac
import secrets

import aiohttp_session
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDictProxy

from ..errors import Forbidden, UserError

FIELD = "csrf_token"
_SESSION_KEY = "csrf"


async def token(request: web.Request) -> str:
    """This session's token, created on first use."""
    session = await aiohttp_session.get_session(request)
    value = session.get(_SESSION_KEY)
    if not isinstance(value, str):
        value = secrets.token_urlsafe(32)
        session[_SESSION_KEY] = value
    return value


async def checked_form(
    request: web.Request,
) -> MultiDictProxy[str | bytes | bytearray | web.FileField]:
    """The posted form, once its CSRF token matches the session's; 403 otherwise, and
    400 for a body that is not a readable form."""
    try:
        form = await request.post()
    except (ValueError, LookupError, HttpProcessingError, ConnectionResetError) as exc:
        # Undecodable text, an unknown charset, a broken multipart body.
        raise UserError(f"The form could not be read: {exc}.", code="invalid_form") from exc
    sent = form.get(FIELD)
    session = await aiohttp_session.get_session(request)
    expected = session.get(_SESSION_KEY)
    if not (
        isinstance(sent, str)
        and isinstance(expected, str)
        and hmac.compare_digest(sent.encode(), expected.encode())
    ):
        raise Forbidden(
            "The form's security token is missing or out of date; reload the page and try again.",
            code="csrf_failed",
        )
    return form
