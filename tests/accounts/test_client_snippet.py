"""The page shown once after an app is created carries a Python snippet (the client's
FastAPI middleware) with the app's ID, its write key and this service's address; the
snippet, pasted into a FastAPI app as it is, sends that app's requests here."""

from __future__ import annotations

import asyncio
import html as html_lib
import time
from collections.abc import Callable

import httpx
from aiohttp.test_utils import TestClient

from .conftest import Browser
from .fake_github import FakeGitHub
from .flow import csrf_token, log_in, shown_keys


async def test_the_created_page_shows_a_python_snippet_that_works(
    new_browser: Callable[[], Browser], github: FakeGitHub, client: TestClient
) -> None:
    from fastapi import FastAPI

    browser = new_browser()
    await log_in(browser, github, "alice")
    token = await csrf_token(browser)
    resp = await browser.post("/apps", data={"name": "Snippet API", "csrf_token": token})
    page = await resp.text()
    keys = shown_keys(page)
    snippet = html_lib.unescape(page.split('<pre id="python-send">')[1].split("</pre>")[0])
    assert f'"{keys["app-id"]}"' in snippet and f'"{keys["write-key"]}"' in snippet
    assert str(client.make_url("")).rstrip("/") in snippet
    assert 'data-copy="python-send"' in page
    assert "<script>" not in page  # scripts come from files only (Content-Security-Policy)

    app = FastAPI()

    @app.get("/orders/{order_id}")
    def order(order_id: int) -> dict[str, int]:
        return {"order": order_id}

    namespace = {"app": app}
    exec(compile(snippet, "snippet", "exec"), namespace)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
        assert (await http.get("/orders/1")).status_code == 200
        assert (await http.get("/orders/2")).status_code == 200
    sender = namespace["sender"]
    assert await asyncio.to_thread(sender.close, 10)  # type: ignore[attr-defined]

    now = int(time.time())
    answer = await client.get(
        f"/1/timeseries/{now - 3600}/{now + 3600}/",
        params={"group": "function"},
        headers={"X-Auth-User": keys["app-id"], "X-Auth-Key": keys["read-key"]},
    )
    assert (await answer.json())["groups"] == {"/orders/{order_id}": [[now - 3600, 2]]}
