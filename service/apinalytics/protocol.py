"""What happens before a request reaches the application: aiohttp's own answers,
and connections that send no request.

aiohttp answers a request it cannot parse (a control character in a header, a header
or request line over the limit, no colon) itself, with a plain-text 400 whose body
quotes the offending bytes: an ``X-Auth-Key`` among them went back to the client and,
through its log line, into the log. ``install`` makes those answers JSON errors like
every other (``{"error": {"code", "message"}}``), naming the kind of problem and never
the bytes; ``logs`` keeps the same part of the message for its one INFO line.

Connections are bounded too. One that has not sent a whole request head within
``header_timeout_s`` of opening is closed (500 connections sending half a request
stayed open for good: aiohttp waits for a first request as long as its keep-alive
timeout, 75 s, and for the rest of a head without limit). Past ``max_connections``
open in the process, a new one is answered 503 overloaded and closed.

aiohttp offers no hook for any of this (its request handler answers before any
middleware or signal), so two of the handler's methods are wrapped, once per process;
the settings are those of the application the connection serves.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web, web_protocol

from .errors import ApiError, Overloaded, UserError
from .keys import METRICS, SETTINGS
from .logs import what_was_wrong


def _error_response(status: int, exc: BaseException | None) -> web.Response:
    if 400 <= status < 500:
        what = what_was_wrong(exc) if exc is not None else "malformed request"
        err: ApiError = UserError(
            f"The request could not be read as HTTP: {what}. Header values are not repeated "
            "here or in the log.",
            code="malformed_request",
        )
        err.status = status
    else:
        err = ApiError("An internal error occurred; it has been logged.")
    response = web.json_response(err.body(), status=status)
    response.force_close()
    return response


_original = web_protocol.RequestHandler.handle_error


def _handle_error(
    self: web_protocol.RequestHandler,
    request: Any,
    status: int = 500,
    exc: BaseException | None = None,
    message: str | None = None,
) -> web.StreamResponse:
    # aiohttp's method logs (logs.quiet_malformed_requests rewrites that line) and
    # checks that nothing was sent yet; only its body is replaced.
    _original(self, request, status, exc, message)
    return _error_response(status, exc)


_original_connection_made = web_protocol.RequestHandler.connection_made


def _application(handler: web_protocol.RequestHandler) -> web.Application | None:
    app = getattr(handler._request_handler, "__self__", None)
    return app if isinstance(app, web.Application) else None


def _close_if_no_request(handler: web_protocol.RequestHandler) -> None:
    transport = handler.transport
    if transport is not None and handler._request_count == 0:
        transport.close()


def _overloaded_answer() -> bytes:
    err = Overloaded("too many connections are open")
    body = json.dumps(err.body()).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def _connection_made(self: web_protocol.RequestHandler, transport: asyncio.BaseTransport) -> None:
    _original_connection_made(self, transport)
    app = _application(self)
    if app is None or SETTINGS not in app:
        return
    settings = app[SETTINGS]
    manager = self._manager
    if manager is not None and len(manager.connections) > settings.max_connections:
        app[METRICS].requests_rejected.labels(reason="overloaded").inc()
        if isinstance(transport, asyncio.WriteTransport):
            transport.write(_overloaded_answer())
        transport.close()
        return
    self._loop.call_later(settings.header_timeout_s, _close_if_no_request, self)


def install() -> None:
    """Wrap aiohttp's answer to requests it cannot parse, and its start of a
    connection (once per process)."""
    handler = web_protocol.RequestHandler
    if handler.handle_error is not _handle_error:
        handler.handle_error = _handle_error  # type: ignore[method-assign]
    if handler.connection_made is not _connection_made:
        handler.connection_made = _connection_made  # type: ignore[method-assign]
