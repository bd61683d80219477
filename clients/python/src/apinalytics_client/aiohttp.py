"""aiohttp middleware.

    app = web.Application(middlewares=[apinalytics_middleware(sender)])

``function`` is the matched resource's template (``/orders/{id}``,
``request.match_info.route.resource.canonical``), empty when nothing matched. An
``HTTPException`` raised by a handler is recorded with its status, any other
exception as 500 (what aiohttp answers). A handler's ``StreamResponse`` is timed
until the handler returns, that is after it wrote its body. Hooks get the
``web.Request``. ``setup(app, sender)`` adds the middleware and closes an
``AsyncSender`` (or flushes a ``Sender``) when the application cleans up.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any, Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ._middleware import DEFAULT_SECRET_PARAMS, DEFAULT_SKIP_PATHS, EventSink, Options
from .async_sender import AsyncSender
from .sender import Sender


def route_template(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else ""


def apinalytics_middleware(
    sender: EventSink,
    *,
    consumer_id: Callable[[web.Request], str | None] | None = None,
    data: Callable[[web.Request], Mapping[str, str] | None] | None = None,
    function: Callable[[web.Request], str | None] | None = None,
    skip_paths: Iterable[str] = DEFAULT_SKIP_PATHS,
    secret_params: Iterable[str] = DEFAULT_SECRET_PARAMS,
) -> Middleware:
    """A middleware recording one event per request."""
    options: Options[web.Request] = Options(
        sender,
        consumer_id=consumer_id,
        data=data,
        function=function,
        skip_paths=skip_paths,
        secret_params=secret_params,
    )

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in options.skip_paths:
            return await handler(request)
        started = time.time()
        t0 = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            options.record(
                request,
                method=request.method,
                url=options.url(request.path, request.query_string),
                status_code=status,
                started=started,
                elapsed_s=time.perf_counter() - t0,
                function=route_template(request),
            )

    return middleware


def setup(app: web.Application, sender: Sender | AsyncSender, **options: Any) -> None:
    """Add the middleware first in ``app.middlewares`` and close the sender (sending
    what it holds) on the application's cleanup."""
    app.middlewares.insert(0, apinalytics_middleware(sender, **options))

    async def close(_: web.Application) -> None:
        if isinstance(sender, AsyncSender):
            await sender.close()
        else:
            sender.flush(5.0)

    app.on_cleanup.append(close)
