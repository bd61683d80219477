"""ASGI middleware (Starlette, FastAPI, any ASGI 3 application).

    app.add_middleware(ApinalyticsMiddleware, sender=Sender(APP_ID, WRITE_KEY, URL))

Pure ASGI (no Starlette import): the response time runs from the request's arrival to
the end of the response's last body message, so a streaming response is timed until
it has finished. ``function`` is the matched route's template (``/orders/{id}``, from
``scope["route"]``, which Starlette and FastAPI set), else the endpoint's name, else
empty. Hooks get the ASGI ``scope`` (``starlette.requests.Request(scope)`` reads it).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Iterable, Mapping, MutableMapping
from typing import Any, Callable

from ._middleware import DEFAULT_SECRET_PARAMS, DEFAULT_SKIP_PATHS, EventSink, Options

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def route_template(scope: Mapping[str, Any]) -> str:
    """The matched route's template, or the endpoint's name; never the raw path."""
    route = scope.get("route")
    if route is not None:
        path = getattr(route, "path_format", None) or getattr(route, "path", None)
        if isinstance(path, str):
            return path
    endpoint = scope.get("endpoint")
    if endpoint is not None:
        name = getattr(endpoint, "__qualname__", None) or getattr(endpoint, "__name__", "")
        return str(name)
    return ""


class ApinalyticsMiddleware:
    """Record one event per HTTP request of the wrapped ASGI application."""

    def __init__(
        self,
        app: ASGIApp,
        sender: EventSink,
        *,
        consumer_id: Callable[[Scope], str | None] | None = None,
        data: Callable[[Scope], Mapping[str, str] | None] | None = None,
        function: Callable[[Scope], str | None] | None = None,
        skip_paths: Iterable[str] = DEFAULT_SKIP_PATHS,
        secret_params: Iterable[str] = DEFAULT_SECRET_PARAMS,
    ) -> None:
        self.app = app
        self.options: Options[Scope] = Options(
            sender,
            consumer_id=consumer_id,
            data=data,
            function=function,
            skip_paths=skip_paths,
            secret_params=secret_params,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.options.skip_paths:
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        started = time.time()
        t0 = time.perf_counter()
        state: dict[str, Any] = {"status": 500, "responded": False, "ended": None}

        async def send_and_watch(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                state["status"] = message["status"]
                state["responded"] = True
            await send(message)
            if kind == "http.response.body" and not message.get("more_body", False):
                state["ended"] = time.perf_counter()

        try:
            await self.app(scope, receive, send_and_watch)
        except BaseException:
            # What the server (or Starlette's ServerErrorMiddleware) answers an
            # exception with, unless a response had started already.
            if not state["responded"]:
                state["status"] = 500
            raise
        finally:
            ended = state["ended"] or time.perf_counter()
            query = scope.get("query_string", b"")
            self.options.record(
                scope,
                method=scope["method"],
                url=self.options.url(path, query.decode("latin-1") if query else ""),
                status_code=state["status"],
                started=started,
                elapsed_s=ended - t0,
                function=route_template(scope),
            )
