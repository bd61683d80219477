"""What happens before a request reaches the application: aiohttp's own answers.

aiohttp answers a request it cannot parse (a control character in a header, a header
or request line over the limit, no colon) itself, with a plain-text 400 whose body
quotes the offending bytes: an ``X-Auth-Key`` among them went back to the client and,
through its log line, into the log. ``install`` makes those answers JSON errors like
every other (``{"error": {"code", "message"}}``), naming the kind of problem and never
the bytes; ``logs`` keeps the same part of the message for its one INFO line.

aiohttp offers no hook for these answers (its request handler builds them before any
middleware or signal), so the handler's method is wrapped, once per process.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web, web_protocol
from aiohttp.http_exceptions import HttpProcessingError

from .errors import ApiError, UserError

# aiohttp's messages say what is wrong, then a colon or a quote, then the bytes.
_ECHO = re.compile(r"[:'\"\n\r\\]")
MAX_WHAT = 120


def what_was_wrong(exc: BaseException) -> str:
    """The kind of problem of a request aiohttp could not parse, without any of its bytes."""
    message = exc.message if isinstance(exc, HttpProcessingError) else ""
    what = _ECHO.split(str(message), maxsplit=1)[0].strip()[:MAX_WHAT]
    return what or type(exc).__name__


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


def install() -> None:
    """Wrap aiohttp's answer to requests it cannot parse (once per process)."""
    if web_protocol.RequestHandler.handle_error is not _handle_error:
        web_protocol.RequestHandler.handle_error = _handle_error  # type: ignore[method-assign]
