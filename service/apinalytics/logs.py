"""Structured logs: one JSON object per line, extra fields included.

With several worker processes (``serve --workers N``) every line also names its process
(``pid``), so the lines of one worker can be told from another's.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

# Attributes every LogRecord has; anything else was passed in `extra=` and is logged.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, with_pid: bool = False) -> None:
        super().__init__()
        self.with_pid = with_pid

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if self.with_pid:
            out["pid"] = record.process
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure(level: str = "INFO", as_json: bool = True, *, with_pid: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(JsonFormatter(with_pid))
    else:
        pid = " [%(process)d]" if with_pid else ""
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s{pid} %(levelname)s %(name)s %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


# aiohttp's messages say what is wrong, then a colon or a quote, then the bytes.
_ECHO = re.compile(r"[:'\"\n\r\\]")
MAX_WHAT = 120


def what_was_wrong(exc: BaseException) -> str:
    """The kind of problem of a request aiohttp could not parse, without any of its bytes."""
    message = exc.message if isinstance(exc, HttpProcessingError) else ""
    what = _ECHO.split(str(message), maxsplit=1)[0].strip()[:MAX_WHAT]
    return what or type(exc).__name__


class _MalformedRequests(logging.Filter):
    """aiohttp logs every request it cannot parse (a space in the target, a bad header,
    a line over the limit) at ERROR, with a traceback, and answers it with a 400. That
    is the client's doing, and anyone could fill the log with it: one INFO line, with
    what was wrong, instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.exc_info = None
        record.msg = "malformed request from %s"
        # Only what kind of problem: aiohttp's message quotes the bytes, keys included.
        record.error = f"{type(exc).__name__}: {what_was_wrong(exc)}"
        return logging.getLogger().isEnabledFor(logging.INFO)


_MALFORMED = _MalformedRequests()


def quiet_malformed_requests() -> None:
    """Install the filter above on aiohttp's server logger (once)."""
    server = logging.getLogger("aiohttp.server")
    if _MALFORMED not in server.filters:
        server.addFilter(_MALFORMED)
