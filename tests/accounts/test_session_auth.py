"""Session-authenticated reads: the dashboard queries without the read key.

Spec (accounts issue, design of ``auth.require``): a request with ``X-Auth-User`` and
no ``X-Auth-Key`` reads the app if the logged-in session's user owns it; an app that
is missing or someone else's is 404; without a session it is 401 as before. Sessions
never authorize ingest. A key, when sent, decides alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from apinalytics.apps import NewApp

from ..helpers import assert_error, event, write_headers
from .fake_github import FakeGitHub
from .flow import add_app, log_in

Browser = aiohttp.ClientSession


def query_path() -> str:
    now = int(time.time())
    return f"/1/timeseries/{now - 3600}/{now + 60}/"


@pytest.mark.parametrize(
    ("who", "target", "headers", "status", "code"),
    [
        pytest.param("owner", "own", "app_id_only", 200, None, id="owner_session"),
        pytest.param("other_user", "own", "app_id_only", 404, "not_found", id="another_users_app"),
        pytest.param("owner", "missing", "app_id_only", 404, "not_found", id="unknown_app"),
        pytest.param("owner", "cli", "app_id_only", 404, "not_found", id="ownerless_cli_app"),
        pytest.param("nobody", "own", "app_id_only", 401, "unauthorized", id="no_session"),
        pytest.param("owner", "own", "nothing", 401, "unauthorized", id="no_app_id"),
        pytest.param("owner", "own", "wrong_key", 401, "unauthorized", id="key_decides_alone"),
        pytest.param("owner", "own", "write_key", 403, "forbidden", id="write_key_still_403"),
    ],
)
async def test_session_reads(
    new_browser: Callable[[], Browser],
    github: FakeGitHub,
    client: TestClient,
    app_keys: NewApp,
    who: str,
    target: str,
    headers: str,
    status: int,
    code: str | None,
) -> None:
    owner = new_browser()
    await log_in(owner, github, "alice")
    keys = await add_app(owner, "dashboarded")
    ingest = await client.post(
        "/1/events/",
        json=[event(), event()],
        headers={"X-Auth-User": keys["app-id"], "X-Auth-Key": keys["write-key"]},
    )
    assert ingest.status == 200

    browser = {"owner": owner, "nobody": new_browser()}.get(who)
    if browser is None:
        browser = new_browser()
        await log_in(browser, github, "bob")
    app_id = {"own": keys["app-id"], "missing": "no-such-app", "cli": app_keys.app_id}[target]
    sent = {
        "app_id_only": {"X-Auth-User": app_id},
        "nothing": {},
        "wrong_key": {"X-Auth-User": app_id, "X-Auth-Key": "apr_wrong"},
        "write_key": {"X-Auth-User": app_id, "X-Auth-Key": keys["write-key"]},
    }[headers]

    resp = await browser.get(query_path(), headers=sent)
    if status == 200:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert body["groups"] == {app_id: [[body["start"], 2]]}
    else:
        await assert_error(resp, status, code)
    # The API's CORS answer never admits credentials, whoever asks.
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in resp.headers


async def test_sessions_never_authorize_ingest(
    new_browser: Callable[[], Browser], github: FakeGitHub, client: TestClient
) -> None:
    owner = new_browser()
    await log_in(owner, github, "alice")
    keys = await add_app(owner, "write-guarded")
    resp = await owner.post("/1/events/", json=[event()], headers={"X-Auth-User": keys["app-id"]})
    await assert_error(resp, 401, "unauthorized")
    count = await client.get(
        query_path(), headers={"X-Auth-User": keys["app-id"], "X-Auth-Key": keys["read-key"]}
    )
    assert not any((await count.json())["groups"].values()), "nothing was stored"


async def test_a_logged_out_session_reads_nothing(
    new_browser: Callable[[], Browser], github: FakeGitHub, app_keys: NewApp, client: TestClient
) -> None:
    from .flow import csrf_token

    owner = new_browser()
    await log_in(owner, github, "alice")
    keys = await add_app(owner, "left")
    assert (await owner.get(query_path(), headers={"X-Auth-User": keys["app-id"]})).status == 200
    token = await csrf_token(owner)
    await owner.post("/logout", data={"csrf_token": token})
    resp = await owner.get(query_path(), headers={"X-Auth-User": keys["app-id"]})
    await assert_error(resp, 401, "unauthorized")
    # Keys keep working as before for everyone else.
    ok = await client.post("/1/events/", json=[event()], headers=write_headers(app_keys))
    assert ok.status == 200
