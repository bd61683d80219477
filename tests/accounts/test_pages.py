"""The account pages: applications, keys shown once, rotation, deletion, CSRF, isolation.

Spec (SPEC "Identity", accounts issue): a logged-in user lists and creates
applications; keys are shown once (with copy buttons and a ready-to-paste curl
example); rotating the write or the read key stops the old one at once, for ingest
and for queries; deleting an application after a confirmation removes its events and
rollup rows. Every state-changing form needs the session's CSRF token. Nobody sees
or changes another user's applications: those are 404, like missing ones.

Creating an app and rotating a key answer 303 to the keys page (redirect after
POST): a reload never creates or rotates again, and the keys are shown on the first
GET only; a reload of it leads to the app's page, which says keys are shown once and
how to get new ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from apinalytics.apps import NewApp

from ..helpers import assert_error, catch_up, event
from .fake_github import FakeGitHub
from .flow import add_app, csrf_token, log_in

Browser = aiohttp.ClientSession

ROLLUPS = (
    "events_1m",
    "events_1h",
    "events_1h_app",
    "events_1h_function",
    "events_1h_consumer",
    "events_1m_app",
)


def write(keys: dict[str, str]) -> dict[str, str]:
    return {"X-Auth-User": keys["app-id"], "X-Auth-Key": keys["write-key"]}


def read(keys: dict[str, str]) -> dict[str, str]:
    return {"X-Auth-User": keys["app-id"], "X-Auth-Key": keys["read-key"]}


def query_path() -> str:
    now = int(time.time())
    return f"/1/timeseries/{now - 3600}/{now + 60}/"


@pytest.fixture
async def alice(new_browser: Callable[[], Browser], github: FakeGitHub) -> Browser:
    browser = new_browser()
    await log_in(browser, github, "alice")
    return browser


@pytest.fixture
async def bob(new_browser: Callable[[], Browser], github: FakeGitHub) -> Browser:
    browser = new_browser()
    await log_in(browser, github, "bob")
    return browser


async def test_landing_page_offers_login_and_the_dashboard(
    new_browser: Callable[[], Browser],
) -> None:
    browser = new_browser()
    resp = await browser.get("/")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    html = await resp.text()
    assert '<a class="button" id="login" href="/login">Log in with GitHub</a>' in html
    assert "/logout" not in html
    assert '<a id="dashboard" href="/dashboard/">' in html
    assert (await browser.get("/dashboard/")).status == 200


async def test_pages_need_a_login(new_browser: Callable[[], Browser]) -> None:
    browser = new_browser()
    for path in ("/apps", "/apps/whatever", "/apps/whatever/delete"):
        resp = await browser.get(path, allow_redirects=False)
        assert (resp.status, resp.headers["Location"]) == (303, "/"), path


async def test_static_assets_are_served(new_browser: Callable[[], Browser]) -> None:
    browser = new_browser()
    for path in ("/static/style.css", "/static/copy.js"):
        assert (await browser.get(path)).status == 200, path


async def test_create_shows_keys_once_and_they_work(
    alice: Browser, client: TestClient, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    empty = await alice.get("/apps")
    assert 'id="no-apps"' in await empty.text()
    token = await csrf_token(alice)
    resp = await alice.post("/apps", data={"name": "  Shop API  ", "csrf_token": token})
    assert resp.status == 200
    assert [r.status for r in resp.history] == [303], "redirected after the POST"
    assert resp.headers["Cache-Control"] == "no-store"
    html = await resp.text()
    from .flow import shown_keys

    keys = shown_keys(html)
    assert set(keys) == {"app-id", "write-key", "read-key"}
    assert keys["write-key"].startswith("apw_") and keys["read-key"].startswith("apr_")
    assert "shown only this once" in html
    for target in ("app-id", "write-key", "read-key", "curl-send", "curl-query"):
        assert f'data-copy="{target}"' in html, target
    # The curl examples carry the keys and this server's address.
    send = html.split('<pre id="curl-send">')[1].split("</pre>")[0]
    assert keys["write-key"] in send and keys["app-id"] in send
    assert str(client.make_url("/1/events/")) in send
    query = html.split('<pre id="curl-query">')[1].split("</pre>")[0]
    assert keys["read-key"] in query and "/1/timeseries/" in query

    ingest = await client.post("/1/events/", json=[event()], headers=write(keys))
    assert ingest.status == 200, await ingest.text()
    answer = await client.get(query_path(), headers=read(keys))
    assert answer.status == 200, await answer.text()
    assert (await answer.json())["groups"][keys["app-id"]][0][1] == 1

    owner = await db.fetchval(
        "SELECT u.login FROM apps a JOIN users u ON u.id = a.owner_id WHERE a.public_id = $1",
        keys["app-id"],
    )
    assert owner == "alice"
    listing = await (await alice.get("/apps")).text()
    assert "Shop API" in listing and f'href="/apps/{keys["app-id"]}"' in listing
    # Listed and manageable, but the keys are never shown again.
    detail = await (await alice.get(f"/apps/{keys['app-id']}")).text()
    assert keys["write-key"] not in listing + detail
    assert keys["read-key"] not in listing + detail
    assert 'id="rotate-write"' in detail and 'id="rotate-read"' in detail
    assert f'href="/dashboard/?app={keys["app-id"]}"' in detail
    # Key material is never logged, at any level.
    assert caplog.records
    logged = caplog.text + "".join(str(vars(r)) for r in caplog.records)
    assert keys["write-key"] not in logged and keys["read-key"] not in logged


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        pytest.param("a", True, id="one_char"),
        pytest.param("x" * 100, True, id="longest"),
        pytest.param("x" * 101, False, id="one_too_long"),
        pytest.param("   ", False, id="blank"),
        pytest.param("bad\x00name", False, id="control_char_nul"),
    ],
)
async def test_app_names(alice: Browser, db: asyncpg.Connection, name: str, ok: bool) -> None:
    token = await csrf_token(alice)
    resp = await alice.post("/apps", data={"name": name, "csrf_token": token})
    assert resp.status == (200 if ok else 400), await resp.text()
    assert await db.fetchval("SELECT count(*) FROM apps") == (1 if ok else 0)
    if not ok:
        assert 'id="error-message"' in await resp.text()


@pytest.mark.parametrize("kind", ["write", "read"])
async def test_rotation_stops_the_old_key_at_once(
    alice: Browser, client: TestClient, kind: str
) -> None:
    old = await add_app(alice, "rotating")
    token = await csrf_token(alice, f"/apps/{old['app-id']}")
    resp = await alice.post(f"/apps/{old['app-id']}/keys/{kind}", data={"csrf_token": token})
    assert resp.status == 200
    assert [r.status for r in resp.history] == [303], "redirected after the POST"
    assert resp.headers["Cache-Control"] == "no-store"
    from .flow import shown_keys

    new = {**old, **shown_keys(await resp.text())}
    other = "read" if kind == "write" else "write"
    assert new[f"{kind}-key"] != old[f"{kind}-key"]
    assert f'id="{other}-key"' not in await resp.text(), "only the rotated key is shown"

    ingest_old = await client.post("/1/events/", json=[event()], headers=write(old))
    ingest_new = await client.post("/1/events/", json=[event()], headers=write(new))
    query_old = await client.get(query_path(), headers=read(old))
    query_new = await client.get(query_path(), headers=read(new))
    if kind == "write":
        await assert_error(ingest_old, 401, "unauthorized")
        assert query_old.status == 200
    else:
        assert ingest_old.status == 200
        await assert_error(query_old, 401, "unauthorized")
    assert ingest_new.status == 200
    assert query_new.status == 200


async def test_create_and_rotate_redirect_and_a_reload_shows_no_keys(
    alice: Browser, bob: Browser, db: asyncpg.Connection
) -> None:
    from .flow import shown_keys

    token = await csrf_token(alice)
    made = await alice.post(
        "/apps", data={"name": "Reloaded", "csrf_token": token}, allow_redirects=False
    )
    assert made.status == 303, await made.text()
    target = made.headers["Location"]
    app_id = target.removeprefix("/apps/").removesuffix("/keys")
    assert target == f"/apps/{app_id}/keys"
    assert "apw_" not in await made.text() + str(made.headers)

    page = await alice.get(target)
    assert page.status == 200 and page.headers["Cache-Control"] == "no-store"
    keys = shown_keys(await page.text())
    assert set(keys) == {"app-id", "write-key", "read-key"} and keys["app-id"] == app_id
    assert "Created Reloaded" in await page.text()
    # Another user's browser cannot get at them, nor learn the app exists.
    assert (await bob.get(target, allow_redirects=False)).status == 404

    for _ in range(2):  # reloads
        again = await alice.get(target, allow_redirects=False)
        assert again.status == 303 and again.headers["Location"] == f"/apps/{app_id}"
        shown = await (await alice.get(target)).text()
        assert keys["write-key"] not in shown and keys["read-key"] not in shown
        assert 'id="rotate-write"' in shown
    explained = await alice.get(target)
    assert "shown once" in await explained.text()
    assert "rotate a key" in await explained.text()
    assert "shown once" not in await (await alice.get(f"/apps/{app_id}")).text(), "said once"
    assert await db.fetchval("SELECT count(*) FROM apps WHERE name = 'Reloaded'") == 1

    token = await csrf_token(alice, f"/apps/{app_id}")
    rotated = await alice.post(
        f"/apps/{app_id}/keys/write", data={"csrf_token": token}, allow_redirects=False
    )
    assert rotated.status == 303 and rotated.headers["Location"] == target
    new = shown_keys(await (await alice.get(target)).text())
    assert set(new) == {"app-id", "write-key"} and new["write-key"] != keys["write-key"]
    reload = await (await alice.get(target)).text()
    assert new["write-key"] not in reload


async def test_unknown_key_kind_is_404(alice: Browser) -> None:
    keys = await add_app(alice, "kinds")
    token = await csrf_token(alice)
    resp = await alice.post(f"/apps/{keys['app-id']}/keys/admin", data={"csrf_token": token})
    assert resp.status == 404


async def count_rows(db: asyncpg.Connection, internal_id: int) -> dict[str, int]:
    out = {}
    for relation in ("events", *ROLLUPS):
        # Fixed relation names from this module, not input.
        out[relation] = await db.fetchval(
            f"SELECT count(*) FROM {relation} WHERE app_id = $1", internal_id
        )
    return out


async def test_delete_after_confirmation_removes_events_and_rollups(
    alice: Browser, client: TestClient, db: asyncpg.Connection, app_keys: NewApp
) -> None:
    doomed = await add_app(alice, "doomed")
    batch = [event(timestamp=time.time() - 60 * i, function=f"f{i}") for i in range(5)]
    for keys in (doomed, {"app-id": app_keys.app_id, "write-key": str(app_keys.write_key)}):
        resp = await client.post("/1/events/", json=batch, headers=write(keys))
        assert resp.status == 200, await resp.text()
    await catch_up(db)
    ids = {r["public_id"]: r["id"] for r in await db.fetch("SELECT id, public_id FROM apps")}
    before = await count_rows(db, ids[doomed["app-id"]])
    assert all(n > 0 for n in before.values()), before
    untouched = await count_rows(db, ids[app_keys.app_id])

    confirm = await alice.get(f"/apps/{doomed['app-id']}/delete")
    assert confirm.status == 200
    assert 'id="confirm-delete"' in await confirm.text()
    token = await csrf_token(alice, f"/apps/{doomed['app-id']}/delete")

    mistyped = await alice.post(
        f"/apps/{doomed['app-id']}/delete", data={"csrf_token": token, "confirm": "doome"}
    )
    assert mistyped.status == 400
    assert "does not match; nothing was deleted" in await mistyped.text()
    assert await count_rows(db, ids[doomed["app-id"]]) == before

    resp = await alice.post(
        f"/apps/{doomed['app-id']}/delete",
        data={"csrf_token": token, "confirm": "doomed"},
        allow_redirects=False,
    )
    assert (resp.status, resp.headers["Location"]) == (303, "/apps")
    listing = await (await alice.get("/apps")).text()
    assert "Deleted doomed and all of its data." in listing
    assert (
        await db.fetchval("SELECT count(*) FROM apps WHERE public_id = $1", doomed["app-id"]) == 0
    )
    assert await count_rows(db, ids[doomed["app-id"]]) == dict.fromkeys(before, 0)
    assert await count_rows(db, ids[app_keys.app_id]) == untouched
    gone = await client.post("/1/events/", json=[event()], headers=write(doomed))
    await assert_error(gone, 401, "unauthorized")
    # The flash is shown once.
    assert "Deleted doomed" not in await (await alice.get("/apps")).text()


BAD_TOKENS = ("missing", "wrong", "another_sessions")


@pytest.mark.parametrize(
    "form",
    ["create", "rotate_write", "rotate_read", "delete", "logout"],
)
async def test_every_form_needs_the_csrf_token(
    alice: Browser, bob: Browser, client: TestClient, db: asyncpg.Connection, form: str
) -> None:
    keys = await add_app(alice, "guarded")
    path, fields = {
        "create": ("/apps", {"name": "sneaky"}),
        "rotate_write": (f"/apps/{keys['app-id']}/keys/write", {}),
        "rotate_read": (f"/apps/{keys['app-id']}/keys/read", {}),
        "delete": (f"/apps/{keys['app-id']}/delete", {"confirm": "guarded"}),
        "logout": ("/logout", {}),
    }[form]
    for bad in BAD_TOKENS:
        data = dict(fields)
        if bad == "wrong":
            data["csrf_token"] = "x" * 43
        elif bad == "another_sessions":
            data["csrf_token"] = await csrf_token(bob)
        resp = await alice.post(path, data=data, allow_redirects=False)
        assert resp.status == 403, (bad, await resp.text())
        assert 'data-code="csrf_failed"' in await resp.text(), bad
        # Nothing changed: one app, both keys work, still logged in.
        assert await db.fetchval("SELECT count(*) FROM apps") == 1, bad
        assert (await client.post("/1/events/", json=[], headers=write(keys))).status == 200, bad
        assert (await client.get(query_path(), headers=read(keys))).status == 200, bad
        assert (await alice.get("/apps", allow_redirects=False)).status == 200, bad


async def test_users_cannot_see_or_touch_each_others_apps(
    alice: Browser, bob: Browser, client: TestClient, db: asyncpg.Connection
) -> None:
    keys = await add_app(alice, "alice-private")
    app_id = keys["app-id"]
    bobs = await add_app(bob, "bob-own")

    listing = await (await bob.get("/apps")).text()
    assert "alice-private" not in listing and app_id not in listing
    assert "bob-own" in listing
    assert "bob-own" not in await (await alice.get("/apps")).text()

    token = await csrf_token(bob)
    attempts = {
        "view": bob.get(f"/apps/{app_id}"),
        "confirm_page": bob.get(f"/apps/{app_id}/delete"),
        "rotate_write": bob.post(f"/apps/{app_id}/keys/write", data={"csrf_token": token}),
        "rotate_read": bob.post(f"/apps/{app_id}/keys/read", data={"csrf_token": token}),
        "delete": bob.post(
            f"/apps/{app_id}/delete", data={"csrf_token": token, "confirm": "alice-private"}
        ),
    }
    missing = await bob.get("/apps/no-such-app")
    missing_text = (await missing.text()).replace("no-such-app", app_id)
    for what, request in attempts.items():
        resp = await request
        assert resp.status == 404, what
        # Indistinguishable from an app that does not exist.
        assert await resp.text() == missing_text, what

    assert await db.fetchval("SELECT count(*) FROM apps WHERE public_id = $1", app_id) == 1
    assert (await client.post("/1/events/", json=[event()], headers=write(keys))).status == 200
    assert (await client.get(query_path(), headers=read(keys))).status == 200
    assert (await client.post("/1/events/", json=[], headers=write(bobs))).status == 200
