"""A Django application for tests/clients: its URL patterns (ROOT_URLCONF)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path


def order(request: HttpRequest, order_id: int) -> HttpResponse:
    return JsonResponse({"order": order_id})


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("boom")


def health(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


def stream(request: HttpRequest) -> StreamingHttpResponse:
    def chunks() -> Iterator[bytes]:
        for _ in range(4):
            time.sleep(0.05)
            yield b"chunk\n"

    return StreamingHttpResponse(chunks())


urlpatterns = [
    path("stream", stream),
    path("orders/<int:order_id>", order, name="order"),
    path("boom", boom),
    path("healthz", health),
]
