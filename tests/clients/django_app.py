"""A Django application for tests/clients: its URL patterns (ROOT_URLCONF)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path


def order(request: HttpRequest, order_id: int) -> HttpResponse:
    return JsonResponse({"order": order_id})


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("boom")


def health(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


urlpatterns = [
    path("orders/<int:order_id>", order, name="order"),
    path("boom", boom),
    path("healthz", health),
]
