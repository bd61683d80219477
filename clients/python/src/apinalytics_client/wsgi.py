"""WSGI middleware, and its Flask integration.

    from apinalytics_client.wsgi import init_flask
    init_flask(app, Sender(APP_ID, WRITE_KEY, URL))

``ApinalyticsWSGI`` wraps any WSGI application: the response time runs until the
server closes the response iterable (its body sent), the status is the one passed to
``start_response`` (500 when the application raised). A plain WSGI app has no route
template to read: pass ``function=`` (a callable of the environ), else ``function``
is left empty (never the raw path). ``init_flask`` wraps ``app.wsgi_app`` and adds a
``before_request`` hook that reads the route template from ``request.url_rule``
(``/orders/<int:order_id>``); its hooks get ``flask.request`` and run in the request
context (``flask.g`` is there), after the view.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import (
    Any,
    Callable,
)

from ._middleware import DEFAULT_SECRET_PARAMS, DEFAULT_SKIP_PATHS, EventSink, Options

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

FUNCTION_KEY = "apinalytics.function"
CONSUMER_KEY = "apinalytics.consumer_id"
DATA_KEY = "apinalytics.data"


class ApinalyticsWSGI:
    """Record one event per request of the wrapped WSGI application."""

    def __init__(
        self,
        app: WSGIApp,
        sender: EventSink,
        *,
        consumer_id: Callable[[Environ], str | None] | None = None,
        data: Callable[[Environ], Mapping[str, str] | None] | None = None,
        function: Callable[[Environ], str | None] | None = None,
        skip_paths: Iterable[str] = DEFAULT_SKIP_PATHS,
        secret_params: Iterable[str] = DEFAULT_SECRET_PARAMS,
    ) -> None:
        self.app = app
        self.options: Options[Environ] = Options(
            sender,
            consumer_id=consumer_id,
            data=data,
            function=function,
            skip_paths=skip_paths,
            secret_params=secret_params,
        )

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        if path in self.options.skip_paths:
            return self.app(environ, start_response)
        started = time.time()
        t0 = time.perf_counter()
        status = [500]

        def start_and_watch(
            status_line: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            with contextlib.suppress(ValueError):
                status[0] = int(status_line[:3])
            if exc_info is None:
                return start_response(status_line, headers)
            return start_response(status_line, headers, exc_info)

        def done() -> None:
            o = self.options
            o.record(
                environ,
                method=environ.get("REQUEST_METHOD", "GET"),
                url=o.url(path, environ.get("QUERY_STRING", "")),
                status_code=status[0],
                started=started,
                elapsed_s=time.perf_counter() - t0,
                function=environ.get(FUNCTION_KEY, ""),
            )

        try:
            body = self.app(environ, start_and_watch)
        except BaseException:
            status[0] = 500
            done()
            raise
        return _Body(body, done)


class _Body:
    """The application's response iterable; ``done`` is called when the server closes
    it (or it was iterated to the end without a close)."""

    __slots__ = ("_body", "_done", "_recorded")

    def __init__(self, body: Iterable[bytes], done: Callable[[], None]) -> None:
        self._body = body
        self._done = done
        self._recorded = False

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            if not self._recorded:
                self._recorded = True
                self._done()


def init_flask(
    app: Any,
    sender: EventSink,
    *,
    consumer_id: Callable[[Any], str | None] | None = None,
    data: Callable[[Any], Mapping[str, str] | None] | None = None,
    function: Callable[[Any], str | None] | None = None,
    skip_paths: Iterable[str] = DEFAULT_SKIP_PATHS,
    secret_params: Iterable[str] = DEFAULT_SECRET_PARAMS,
) -> ApinalyticsWSGI:
    """Record the requests of a Flask application; ``function`` is the route's rule
    (``request.url_rule.rule``), empty for a request no route matched."""
    from flask import request

    def note_route() -> None:
        rule = request.url_rule
        request.environ[FUNCTION_KEY] = rule.rule if rule is not None else ""

    def note_hooks(exc: BaseException | None) -> None:
        environ = request.environ
        try:
            if consumer_id is not None:
                environ[CONSUMER_KEY] = consumer_id(request)
            if data is not None:
                environ[DATA_KEY] = data(request)
            if function is not None:
                environ[FUNCTION_KEY] = function(request) or ""
        except Exception:
            environ[CONSUMER_KEY] = environ[DATA_KEY] = None
            from ._middleware import _hook_warnings

            _hook_warnings.warning("hook", "apinalytics: a middleware hook raised; ignored")

    # First of the before_request hooks: another one may answer without calling the rest.
    app.before_request_funcs.setdefault(None, []).insert(0, note_route)
    if consumer_id is not None or data is not None or function is not None:
        app.teardown_request(note_hooks)
    wrapped = ApinalyticsWSGI(
        app.wsgi_app,
        sender,
        consumer_id=(lambda environ: environ.get(CONSUMER_KEY)) if consumer_id else None,
        data=(lambda environ: environ.get(DATA_KEY)) if data else None,
        skip_paths=skip_paths,
        secret_params=secret_params,
    )
    app.wsgi_app = wrapped
    return wrapped
