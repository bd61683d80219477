"""The account pages: landing, GitHub login, "Your applications", keys, deletion.

Server-rendered and usable without JavaScript (a small script only adds copy
buttons). Every state-changing request is a POST form carrying the CSRF token, and
answers with a redirect (303) to a page, so that a reload never sends it again.
Pages that show keys are sent with ``Cache-Control: no-store``: keys are shown
once and must not stay in a cache.

Showing new keys once (``new_keys.py``). Creating an app or rotating a key puts the
new keys in the session and redirects to ``/apps/<id>/keys``, which takes them out
again as it shows them: a reload of that page, or any later visit, finds none and is
sent to the app's page, which says that keys are shown once and how to get new ones.
"""

from __future__ import annotations

import hmac
import logging
from pathlib import Path
from typing import Any, NoReturn

import aiohttp_jinja2
import aiohttp_session
from aiohttp import web
from aiohttp.typedefs import Handler

from .. import apps
from ..apps import KeyKind, NewApp
from ..errors import ApiError, NotFound, UserError
from ..keys import DB, SETTINGS
from . import csrf, new_keys, oauth, sessions, users
from .users import User

log = logging.getLogger(__name__)

ROUTE_PREFIX = "accounts."
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
_OAUTH_STATE = "oauth_state"
_FLASH = "flash"


@web.middleware
async def html_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Domain errors raised by a page are shown as a page (the API keeps its JSON)."""
    try:
        return await handler(request)
    except ApiError as exc:
        name = request.match_info.route.name or ""
        if not name.startswith(ROUTE_PREFIX):
            raise
        if not isinstance(exc, UserError):
            log.warning("page failed: %s", exc.message, extra={"code": exc.code})
        response = aiohttp_jinja2.render_template(
            "error.html",
            request,
            {"user": None, "status": exc.status, "code": exc.code, "message": exc.message},
            status=exc.status,
        )
        response.headers.update(exc.headers)
        return response


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/", landing, name="accounts.landing")
    r.add_get("/login", login, name="accounts.login")
    r.add_get("/login/callback", callback, name="accounts.callback")
    r.add_post("/logout", logout, name="accounts.logout")
    r.add_get("/apps", list_apps, name="accounts.apps")
    # A typed trailing slash gets the page, not a JSON 404.
    r.add_get("/apps/", apps_slash, name="accounts.apps_slash")
    r.add_post("/apps", add_app, name="accounts.create")
    r.add_get("/apps/{app_id}", show_app, name="accounts.app")
    r.add_get("/apps/{app_id}/keys", show_new_keys, name="accounts.new_keys")
    r.add_post("/apps/{app_id}/keys/{kind}", rotate_key, name="accounts.rotate")
    r.add_get("/apps/{app_id}/delete", confirm_delete, name="accounts.confirm_delete")
    r.add_post("/apps/{app_id}/delete", delete_app, name="accounts.delete")
    r.add_static("/static/", STATIC_DIR, name="static")
    # Where the 2014 service showed a user's Application ID and keys (docs/compatibility.md).
    r.add_get("/u", applications_2014, name="accounts.applications_2014")
    r.add_get("/u/", applications_2014, name="accounts.applications_2014_slash")


async def applications_2014(request: web.Request) -> web.StreamResponse:
    raise web.HTTPMovedPermanently("/apps")


async def apps_slash(request: web.Request) -> web.StreamResponse:
    raise web.HTTPMovedPermanently("/apps")


# -- helpers ------------------------------------------------------------------------


def base_url(request: web.Request) -> str:
    """The service's public address, for OAuth redirects and the curl examples:
    ``APINALYTICS_PUBLIC_URL``, else the address the connection came in on.

    Never the Host header, which the client writes: a login link built from it would
    send GitHub's code to whatever host a crafted request named.
    """
    settings = request.app[SETTINGS]
    if settings.public_url:
        return settings.public_url.rstrip("/")
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        host, port = str(sockname[0]), int(sockname[1])
    else:  # a Unix socket, or a connection already gone
        host, port = settings.host, settings.port
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def redirect_uri(request: web.Request) -> str:
    return base_url(request) + "/login/callback"


async def current_user(request: web.Request) -> User | None:
    uid = await sessions.user_id(request)
    if uid is None:
        return None
    async with request.app[DB].connection() as conn:
        user = await users.get(conn, uid)
    if user is None:
        await sessions.log_out(request)
    return user


async def require_user(request: web.Request) -> User:
    """The logged-in user; anyone else is sent to the landing page to log in."""
    user = await current_user(request)
    if user is None:
        raise web.HTTPSeeOther("/")
    return user


async def render(
    request: web.Request, template: str, user: User | None, status: int = 200, **context: Any
) -> web.Response:
    context["user"] = user
    context["csrf_field"] = csrf.FIELD
    context["csrf_token"] = await csrf.token(request) if user else ""
    response = aiohttp_jinja2.render_template(template, request, context, status=status)
    response.headers["Cache-Control"] = "no-store"
    return response


def app_name(form_value: object) -> str:
    try:
        return apps.checked_name(form_value if isinstance(form_value, str) else "")
    except ValueError as exc:
        raise UserError(str(exc)) from exc


# -- login --------------------------------------------------------------------------


async def landing(request: web.Request) -> web.Response:
    user = await current_user(request)
    return await render(
        request, "landing.html", user, configured=oauth.configured(request.app[SETTINGS])
    )


async def login(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    if not oauth.configured(settings):
        return await render(request, "login_setup.html", None, callback_url=redirect_uri(request))
    url, state = await oauth.authorization_url(settings, redirect_uri(request))
    session = await aiohttp_session.get_session(request)
    session[_OAUTH_STATE] = state
    raise web.HTTPFound(url)


async def callback(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    session = await aiohttp_session.get_session(request)
    # One use only: a replayed answer finds no state.
    expected = session.pop(_OAUTH_STATE, None)
    query = request.query
    if "error" in query:
        reason = query.get("error_description") or query["error"]
        raise oauth.LoginFailed(f"GitHub did not grant the login: {reason}.")
    state = query.get("state", "")
    if not (isinstance(expected, str) and hmac.compare_digest(state.encode(), expected.encode())):
        raise oauth.LoginFailed(
            "This login answer does not belong to a login started here (the OAuth state "
            "does not match). Start again from the login page.",
            code="oauth_state_mismatch",
        )
    code = query.get("code")
    if not code:
        raise oauth.LoginFailed("GitHub's answer carries no code. Start again from the login page.")
    gh = await oauth.fetch_user(settings, redirect_uri(request), code)
    async with request.app[DB].connection() as conn:
        user = await users.record_login(conn, gh)
    await sessions.log_in(request, user.id)
    log.info("login", extra={"user_id": user.id, "github_id": gh.id})
    raise web.HTTPSeeOther("/apps")


async def logout(request: web.Request) -> web.Response:
    await csrf.checked_form(request)
    await sessions.log_out(request)
    raise web.HTTPSeeOther("/")


# -- applications -------------------------------------------------------------------


async def list_apps(request: web.Request) -> web.Response:
    user = await require_user(request)
    async with request.app[DB].connection() as conn:
        owned = await apps.list_apps(conn, user.id)
    session = await aiohttp_session.get_session(request)
    flash = session.pop(_FLASH, None)
    return await render(request, "apps.html", user, apps=owned, flash=flash, max_name=apps.MAX_NAME)


async def add_app(request: web.Request) -> web.Response:
    user = await require_user(request)
    form = await csrf.checked_form(request)
    name = app_name(form.get("name"))
    async with request.app[DB].connection() as conn:
        new = await apps.create(conn, name, owner_id=user.id)
    log.info("app created", extra={"user_id": user.id, "app_id": new.app_id})
    await show_keys_once(request, new, created=True)


async def show_keys_once(request: web.Request, new: NewApp, *, created: bool) -> NoReturn:
    """Keep ``new``'s keys in the session for the keys page, and redirect there."""
    new_keys.keep(await aiohttp_session.get_session(request), new, created=created)
    raise web.HTTPSeeOther(f"/apps/{new.app_id}/keys")


async def show_new_keys(request: web.Request) -> web.Response:
    """The keys just made, once; without them, the app's page says why."""
    user = await require_user(request)
    async with request.app[DB].connection() as conn:
        app = await sessions.owned_app(conn, request.match_info["app_id"], user.id)
    session = await aiohttp_session.get_session(request)
    kept = new_keys.take(session, app.app_id, app.name)
    if kept is None:
        session[_FLASH] = new_keys.SHOWN_ONCE
        raise web.HTTPSeeOther(f"/apps/{app.app_id}")
    new, created = kept
    examples = new_keys.examples(base_url(request), new)
    return await render(request, "keys.html", user, new=new, created=created, examples=examples)


async def show_app(request: web.Request) -> web.Response:
    user = await require_user(request)
    async with request.app[DB].connection() as conn:
        app = await sessions.owned_app(conn, request.match_info["app_id"], user.id)
    session = await aiohttp_session.get_session(request)
    flash = session.pop(_FLASH, None)
    return await render(request, "app.html", user, app=app, flash=flash)


async def rotate_key(request: web.Request) -> web.Response:
    user = await require_user(request)
    try:
        kind = KeyKind(request.match_info["kind"])
    except ValueError:
        raise NotFound("Only the write or the read key can be rotated.") from None
    await csrf.checked_form(request)
    async with request.app[DB].transaction() as conn:
        app = await sessions.owned_app(conn, request.match_info["app_id"], user.id)
        new = await apps.rotate(conn, app.app_id, {kind})
    if new is None:  # deleted between the two statements
        raise NotFound(f"You have no application {app.app_id!r}.")
    log.info("key rotated", extra={"user_id": user.id, "app_id": app.app_id, "kind": kind.value})
    await show_keys_once(request, new, created=False)


async def confirm_delete(request: web.Request) -> web.Response:
    user = await require_user(request)
    async with request.app[DB].connection() as conn:
        app = await sessions.owned_app(conn, request.match_info["app_id"], user.id)
    return await render(request, "delete.html", user, app=app, mistyped=False)


async def delete_app(request: web.Request) -> web.Response:
    user = await require_user(request)
    form = await csrf.checked_form(request)
    async with request.app[DB].transaction() as conn:
        app = await sessions.owned_app(conn, request.match_info["app_id"], user.id)
        confirmed = form.get("confirm") == app.name
        if confirmed:
            await apps.delete(conn, app.app_id)
    if not confirmed:
        return await render(request, "delete.html", user, status=400, app=app, mistyped=True)
    log.info("app deleted", extra={"user_id": user.id, "app_id": app.app_id})
    session = await aiohttp_session.get_session(request)
    session[_FLASH] = f"Deleted {app.name} and all of its data."
    raise web.HTTPSeeOther("/apps")
