"""Accounts: GitHub login, sessions, and the pages to manage applications and keys.

``app.create_app`` wires three things from here: the middlewares (the encrypted
cookie session, then HTML rendering of domain errors on pages), the templates, and
the routes.
"""

from __future__ import annotations

import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp.typedefs import Middleware

from ..settings import Settings
from . import pages, sessions


def middlewares(settings: Settings) -> list[Middleware]:
    """Innermost last: pages render their errors as HTML inside the session middleware,
    so a session changed by a failing request (a spent OAuth state) is still saved."""
    return [sessions.middleware(settings), pages.html_errors]


def setup_templates(app: web.Application) -> None:
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("apinalytics", "templates"),
        # Undefined names in a template are bugs, not empty strings.
        undefined=jinja2.StrictUndefined,
    )


def add_routes(app: web.Application) -> None:
    pages.add_routes(app)
