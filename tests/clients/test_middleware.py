"""The client's middleware under real applications of each framework (aiohttp,
FastAPI, Starlette, Flask, Django), each run by its own test client, sending to the
real service; what they recorded is read back through the query API.

Each application has the same four routes: an order by ID (the route template must be
the ``function``, never the raw path), one that raises (recorded as 500), a health
check (skipped by default), and an unknown path (404, empty ``function``). The order
is asked for with secret query parameters, which must not reach the service.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from apinalytics.apps import NewApp
from apinalytics_client import AsyncSender, Sender
from apinalytics_client.asgi import ApinalyticsMiddleware

from ..helpers import read_headers
from .support import counts, hanging_server, service_url

SECRET = "s3cr3t-value"
ORDER_URL = f"/orders/7?page=2&api_key={SECRET}&Access-Token={SECRET}&client_secret={SECRET}"


def sender_for(client: TestClient, app: NewApp) -> Sender:
    assert app.write_key
    return Sender(
        app.app_id, app.write_key, service_url(client), max_age_s=0.05, flush_at_exit=False
    )


async def expect_recorded(
    client: TestClient, app: NewApp, order_template: str, boom_function: str
) -> None:
    assert await counts(client, app, "function") == {
        order_template: 2,
        boom_function: 1,
        "": 1,
    }
    assert await counts(client, app, "status_code") == {"200": 2, "500": 1, "404": 1}
    urls = await counts(client, app, "url")
    assert urls == {"/orders/7?page=2": 1, "/orders/8": 1, "/boom": 1, "/nowhere": 1}
    assert await counts(client, app, "method") == {"GET": 3, "POST": 1}
    assert await counts(client, app, "consumer_id") == {"alice": 2, "": 2}
    assert await counts(client, app, "data.tier") == {"gold": 4}


async def request_all(get: Callable[..., Any]) -> None:
    """The same requests to every framework's app: ``get(method, url, headers)``."""
    assert (await get("GET", ORDER_URL, {"X-Consumer": "alice"})) == 200
    assert (await get("POST", "/orders/8", {"X-Consumer": "alice"})) == 200
    assert (await get("GET", "/boom", {})) == 500
    assert (await get("GET", "/healthz", {})) == 200
    assert (await get("GET", "/nowhere", {})) == 404


def tier(_: object) -> dict[str, str]:
    return {"tier": "gold"}


# -- aiohttp ---------------------------------------------------------------------------


async def test_aiohttp(
    client: TestClient, app_keys: NewApp, aiohttp_client: Callable[..., Any]
) -> None:
    from apinalytics_client.aiohttp import setup

    assert app_keys.write_key
    sender = AsyncSender(app_keys.app_id, app_keys.write_key, service_url(client), max_age_s=0.05)

    async def order(request: web.Request) -> web.Response:
        return web.json_response({"order": request.match_info["order_id"]})

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("boom")

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/orders/{order_id}", order)
    app.router.add_get("/boom", boom)
    app.router.add_get("/healthz", health)
    setup(app, sender, consumer_id=lambda r: r.headers.get("X-Consumer"), data=tier)
    api: TestClient = await aiohttp_client(app)

    async def get(method: str, url: str, headers: dict[str, str]) -> int:
        async with api.request(method, url, headers=headers) as resp:
            return resp.status

    await request_all(get)
    assert await sender.close(10)
    await expect_recorded(client, app_keys, "/orders/{order_id}", "/boom")


# -- ASGI: FastAPI and Starlette --------------------------------------------------------


def consumer_from_scope(scope: Any) -> str | None:
    value: bytes | None = dict(scope["headers"]).get(b"x-consumer")
    return value.decode() if value else None


async def asgi_requests(app: Any) -> None:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:

        async def get(method: str, url: str, headers: dict[str, str]) -> int:
            return (await http.request(method, url, headers=headers)).status_code

        await request_all(get)


async def test_fastapi(client: TestClient, app_keys: NewApp) -> None:
    from fastapi import FastAPI

    sender = sender_for(client, app_keys)
    app = FastAPI()

    @app.api_route("/orders/{order_id}", methods=["GET", "POST"])
    def order(order_id: int) -> dict[str, int]:
        return {"order": order_id}

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("boom")

    @app.get("/healthz")
    def health() -> str:
        return "ok"

    app.add_middleware(
        ApinalyticsMiddleware, sender=sender, consumer_id=consumer_from_scope, data=tier
    )
    await asgi_requests(app)
    assert await asyncio.to_thread(sender.close, 10)
    await expect_recorded(client, app_keys, "/orders/{order_id}", "/boom")


async def test_starlette_with_a_streaming_response(client: TestClient, app_keys: NewApp) -> None:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
    from starlette.routing import Route

    sender = sender_for(client, app_keys)

    async def order(request: Request) -> JSONResponse:
        return JSONResponse({"order": request.path_params["order_id"]})

    async def boom(request: Request) -> JSONResponse:
        raise RuntimeError("boom")

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def stream(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(4):
                await asyncio.sleep(0.05)
                yield b"chunk\n"

        return StreamingResponse(chunks())

    app = Starlette(
        routes=[
            Route("/orders/{order_id:int}", order, methods=["GET", "POST"]),
            Route("/boom", boom),
            Route("/healthz", health),
            Route("/stream", stream),
        ],
        middleware=[
            Middleware(
                ApinalyticsMiddleware,  # type: ignore[arg-type]
                sender=sender,
                consumer_id=consumer_from_scope,
                data=tier,
            )
        ],
    )
    await asgi_requests(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
        assert (await http.get("/stream")).text == "chunk\n" * 4
    assert await asyncio.to_thread(sender.close, 10)

    fn = await counts(client, app_keys, "function")
    assert fn.pop("/stream") == 1
    # path_format: the template without its converters.
    assert fn == {"/orders/{order_id}": 2, "/boom": 1, "": 1}
    # The streaming response is timed until its last chunk: 4 x 50 ms.
    now = int(time.time())
    resp = await client.get(
        f"/1/timeseries/{now - 3600}/{now + 3600}/",
        params={"aggregation": "min", "include": "function:/stream"},
        headers=read_headers(app_keys),
    )
    [[_, slowest]] = (await resp.json())["groups"][app_keys.app_id]
    assert slowest >= 200_000


# -- Flask ------------------------------------------------------------------------------


def flask_app() -> Any:
    from flask import Flask

    app = Flask("api")

    @app.route("/orders/<int:order_id>", methods=["GET", "POST"])
    def order(order_id: int) -> dict[str, int]:
        return {"order": order_id}

    @app.route("/boom")
    def boom() -> str:
        raise RuntimeError("boom")

    @app.route("/healthz")
    def health() -> str:
        return "ok"

    return app


async def test_flask(
    client: TestClient, app_keys: NewApp, caplog: pytest.LogCaptureFixture
) -> None:
    from apinalytics_client.wsgi import init_flask

    sender = sender_for(client, app_keys)
    app = flask_app()
    init_flask(app, sender, consumer_id=lambda r: r.headers.get("X-Consumer"), data=tier)
    http = app.test_client()

    async def get(method: str, url: str, headers: dict[str, str]) -> int:
        resp = http.open(url, method=method, headers=headers)
        resp.close()
        return int(resp.status_code)

    await request_all(get)
    assert await asyncio.to_thread(sender.close, 10)
    await expect_recorded(client, app_keys, "/orders/<int:order_id>", "/boom")


async def test_flask_requests_do_not_wait_on_a_hanging_service() -> None:
    """The service accepts connections and never answers: the host's requests take
    no longer (bounded at 1 s here, where each send would wait 30 s), and once the
    queue is full the events are dropped and counted."""
    from apinalytics_client.wsgi import init_flask

    with hanging_server() as url:
        sender = Sender(
            "app", "wk", url, queue_size=50, batch_size=10, max_age_s=0.01, read_timeout_s=30
        )
        app = flask_app()
        init_flask(app, sender)
        http = app.test_client()
        slowest = 0.0
        for i in range(300):
            started = time.perf_counter()
            with http.get(f"/orders/{i}") as resp:  # closed, as a WSGI server does
                assert resp.status_code == 200
            slowest = max(slowest, time.perf_counter() - started)
        stats = sender.stats
        sender.close(0.1)
    assert slowest < 1.0
    assert stats.dropped >= 300 - 50 - 10
    assert stats.dropped + stats.queued == 300


# -- Django -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def django_configured() -> None:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            ALLOWED_HOSTS=["*"],
            SECRET_KEY="tests-only",
            ROOT_URLCONF="tests.clients.django_app",
            MIDDLEWARE=["apinalytics_client.django.ApinalyticsMiddleware"],
            INSTALLED_APPS=[],
            LOGGING_CONFIG=None,
        )
        django.setup()


async def test_django(client: TestClient, app_keys: NewApp, django_configured: None) -> None:
    from django.test import Client, override_settings

    sender = sender_for(client, app_keys)
    conf = {
        "sender": sender,
        "consumer_id": lambda r: r.headers.get("X-Consumer"),
        "data": tier,
    }

    def run() -> list[int]:
        with override_settings(APINALYTICS=conf):
            http = Client(raise_request_exception=False)
            statuses = []
            for method, url, headers in [
                ("GET", ORDER_URL, {"X-Consumer": "alice"}),
                ("POST", "/orders/8", {"X-Consumer": "alice"}),
                ("GET", "/boom", {}),
                ("GET", "/healthz", {}),
                ("GET", "/nowhere", {}),
            ]:
                resp = http.generic(method, url, headers=headers)
                statuses.append(resp.status_code)
            return statuses

    assert await asyncio.to_thread(run) == [200, 200, 500, 200, 404]
    assert await asyncio.to_thread(sender.close, 10)
    await expect_recorded(client, app_keys, "/orders/<int:order_id>", "/boom")


async def test_django_times_a_streaming_response_until_its_end(
    client: TestClient, app_keys: NewApp, django_configured: None
) -> None:
    from django.test import Client, override_settings

    sender = sender_for(client, app_keys)

    def run() -> bytes:
        with override_settings(APINALYTICS={"sender": sender}):
            resp = Client().get("/stream")
            body = b"".join(resp.streaming_content)  # type: ignore[attr-defined]
            resp.close()
            return body

    assert await asyncio.to_thread(run) == b"chunk\n" * 4
    assert await asyncio.to_thread(sender.close, 10)
    now = int(time.time())
    resp = await client.get(
        f"/1/timeseries/{now - 3600}/{now + 3600}/",
        params={"aggregation": "min", "group": "function"},
        headers=read_headers(app_keys),
    )
    [[_, fastest]] = (await resp.json())["groups"]["/stream"]
    assert fastest >= 200_000  # 4 x 50 ms
