"""What every framework's middleware shares: the options, which paths are skipped,
which query parameters are secrets, and calling the user's hooks safely."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import (
    Any,
    Callable,
    Generic,
    Protocol,
    TypeVar,
)

from ._core import Event, RateLimitedLog, logger

DEFAULT_SKIP_PATHS: frozenset[str] = frozenset(
    {"/health", "/healthz", "/readyz", "/livez", "/ping"}
)

# Query parameters whose value is removed from the recorded URL (with the parameter):
# these names, compared case-insensitively with "-" read as "_", and any name ending
# in "_" + one of SECRET_SUFFIXES ("client_secret", "x_api_key", "id_token", ...).
DEFAULT_SECRET_PARAMS: frozenset[str] = frozenset(
    {
        "key",
        "token",
        "password",
        "passwd",
        "pwd",
        "secret",
        "api_key",
        "apikey",
        "access_token",
        "refresh_token",
        "auth",
        "authorization",
        "signature",
        "sig",
        "session",
        "sessionid",
        "code",
        "credentials",
    }
)
MAX_REMEMBERED_NAMES = 4096
SECRET_SUFFIXES = ("key", "token", "secret", "password", "signature")


class EventSink(Protocol):
    """What middleware needs of a sender: ``Sender`` and ``AsyncSender`` both are."""

    def enqueue(self, event: Event) -> bool: ...


R = TypeVar("R")

_hook_warnings = RateLimitedLog(60.0)


class Options(Generic[R]):
    """A middleware's settings; ``R`` is the framework's request type that the hooks get.

    consumer_id(request) -> str | None and data(request) -> dict | None are called
    after the handler (so what authentication put on the request is there); an
    exception in a hook is logged (rate-limited) and the event recorded without it.
    function(request) -> str | None overrides the route template as ``function``.
    """

    __slots__ = (
        "_secret",
        "consumer_id",
        "data",
        "function",
        "secret_params",
        "sink",
        "skip_paths",
    )

    def __init__(
        self,
        sink: EventSink,
        *,
        consumer_id: Callable[[R], str | None] | None = None,
        data: Callable[[R], Mapping[str, str] | None] | None = None,
        function: Callable[[R], str | None] | None = None,
        skip_paths: Iterable[str] = DEFAULT_SKIP_PATHS,
        secret_params: Iterable[str] = DEFAULT_SECRET_PARAMS,
    ) -> None:
        self.sink = sink
        self.consumer_id = consumer_id
        self.data = data
        self.function = function
        self.skip_paths = frozenset(skip_paths)
        self.secret_params = frozenset(_norm(p) for p in secret_params)
        # Whether a parameter name (as sent) is a secret, remembered: an API has few
        # distinct names, and deciding costs a couple of microseconds each time.
        self._secret: dict[str, bool] = {}

    def url(self, path: str, query: str) -> str:
        """The URL as recorded: the path, and the query without secret parameters."""
        if not query:
            return path
        known = self._secret
        kept = []
        for param in query.split("&"):
            name = param.partition("=")[0]
            secret = known.get(name)
            if secret is None:
                secret = self.is_secret(name)
                if len(known) >= MAX_REMEMBERED_NAMES:
                    known.clear()
                known[name] = secret
            if param and not secret:
                kept.append(param)
        return f"{path}?{'&'.join(kept)}" if kept else path

    def is_secret(self, name: str) -> bool:
        n = _norm(_unquote(name))
        if n in self.secret_params:
            return True
        return any(n.endswith("_" + s) for s in SECRET_SUFFIXES)

    def record(
        self,
        request: R,
        *,
        method: str,
        url: str,
        status_code: int,
        started: float,
        elapsed_s: float,
        function: str,
    ) -> None:
        """Queue the event of one request (the hooks called here)."""
        consumer = ""
        data = None
        try:
            if self.function is not None:
                function = self.function(request) or ""
            if self.consumer_id is not None:
                consumer = self.consumer_id(request) or ""
            if self.data is not None:
                d = self.data(request)
                data = {str(k): str(v) for k, v in d.items()} if d else None
        except Exception:
            _hook_warnings.warning("hook", "apinalytics: a middleware hook raised; ignored")
            logger.debug("apinalytics: hook error", exc_info=True)
        self.sink.enqueue(
            {
                "timestamp": started,
                "consumer_id": consumer,
                "method": method,
                "url": url,
                "function": function,
                "response_us": int(elapsed_s * 1_000_000),
                "status_code": status_code,
                "data": data,
            }
        )


def _norm(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def _unquote(name: str) -> str:
    if "%" not in name and "+" not in name:
        return name
    from urllib.parse import unquote_plus

    return unquote_plus(name)


def clock() -> tuple[float, float]:
    """The request's start: wall-clock UNIX seconds (the event's timestamp) and a
    monotonic reading (for its duration)."""
    return time.time(), time.perf_counter()


def options_from(sink: EventSink, kwargs: Mapping[str, Any]) -> Options[Any]:
    return Options(sink, **kwargs)
