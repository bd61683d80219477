"""Django middleware.

    # settings.py
    MIDDLEWARE = ["apinalytics_client.django.ApinalyticsMiddleware", ...]
    APINALYTICS = {"app_id": "...", "write_key": "...", "url": "https://..."}

Put it first in ``MIDDLEWARE`` so that it times the others too. ``APINALYTICS`` may
also hold ``sender`` (a ``Sender`` made elsewhere, instead of the three above),
``sender_options`` (keyword arguments of ``Sender``), ``consumer_id`` and ``data``
(callables of the ``HttpRequest``, or their dotted paths), ``skip_paths`` and
``secret_params``. ``function`` is the matched URL pattern
(``request.resolver_match.route``, e.g. ``/orders/<int:pk>/``), else the view's name,
empty when nothing matched. A view's exception is answered 500 by Django's handler
before this middleware sees it, and recorded as 500. A ``StreamingHttpResponse`` is
timed until its last chunk was sent. Works under WSGI and ASGI.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, Callable

from ._middleware import DEFAULT_SECRET_PARAMS, DEFAULT_SKIP_PATHS, EventSink, Options
from .sender import Sender

_senders: dict[str, Sender] = {}


def _setting() -> dict[str, Any]:
    from django.conf import settings

    conf = getattr(settings, "APINALYTICS", None)
    if not isinstance(conf, dict):
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured("settings.APINALYTICS must be a dict (app_id, write_key, url)")
    return conf


def _callable(value: Any) -> Callable[[Any], Any] | None:
    if value is None:
        return None
    if callable(value):
        given: Callable[[Any], Any] = value
        return given
    from django.utils.module_loading import import_string

    found: Callable[[Any], Any] = import_string(value)
    return found


def _sender(conf: dict[str, Any]) -> EventSink:
    given = conf.get("sender")
    if given is not None:
        sink: EventSink = given
        return sink
    app_id, url = conf["app_id"], conf.get("url", "http://127.0.0.1:8080")
    name = f"{app_id}@{url}"
    # One sender per process and app, however many times Django builds its middleware.
    if name not in _senders:
        _senders[name] = Sender(app_id, conf["write_key"], url, **conf.get("sender_options", {}))
    return _senders[name]


def route_template(request: Any) -> str:
    match = getattr(request, "resolver_match", None)
    if match is None:
        return ""
    route = getattr(match, "route", None)
    if route:
        text = str(route)
        return text if text.startswith("/") else "/" + text
    return str(match.view_name or "")


class ApinalyticsMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        conf = _setting()
        self.get_response = get_response
        self.options: Options[Any] = Options(
            _sender(conf),
            consumer_id=_callable(conf.get("consumer_id")),
            data=_callable(conf.get("data")),
            function=_callable(conf.get("function")),
            skip_paths=conf.get("skip_paths", DEFAULT_SKIP_PATHS),
            secret_params=conf.get("secret_params", DEFAULT_SECRET_PARAMS),
        )
        from asgiref.sync import iscoroutinefunction, markcoroutinefunction

        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self.is_async:
            return self._acall(request)
        if request.path in self.options.skip_paths:
            return self.get_response(request)
        started, t0 = time.time(), time.perf_counter()
        response = self.get_response(request)
        self._record(request, response, started, t0)
        return response

    async def _acall(self, request: Any) -> Any:
        if request.path in self.options.skip_paths:
            return await self.get_response(request)
        started, t0 = time.time(), time.perf_counter()
        response = await self.get_response(request)
        self._record(request, response, started, t0)
        return response

    def _record(self, request: Any, response: Any, started: float, t0: float) -> None:
        if getattr(response, "streaming", False):
            self._record_when_streamed(request, response, started, t0)
            return
        self._record_now(request, response, started, t0)

    def _record_when_streamed(self, request: Any, response: Any, started: float, t0: float) -> None:
        """A streaming response is recorded once its last chunk was sent (or the
        server closed it early)."""
        content = response.streaming_content

        if getattr(response, "is_async", False):

            async def timed_async() -> AsyncIterator[Any]:
                try:
                    async for chunk in content:
                        yield chunk
                finally:
                    self._record_now(request, response, started, t0)

            response.streaming_content = timed_async()
        else:

            def timed() -> Iterator[Any]:
                try:
                    yield from content
                finally:
                    self._record_now(request, response, started, t0)

            response.streaming_content = timed()

    def _record_now(self, request: Any, response: Any, started: float, t0: float) -> None:
        o = self.options
        o.record(
            request,
            method=request.method,
            url=o.url(request.path, request.META.get("QUERY_STRING", "")),
            status_code=response.status_code,
            started=started,
            elapsed_s=time.perf_counter() - t0,
            function=route_template(request),
        )
