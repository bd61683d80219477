"""GitHub login through the real service and a fake GitHub on localhost.

Spec (SPEC "Identity", accounts issue): a user logs in with GitHub; the first login
creates the user, keyed by the GitHub user ID (logins change), and every login
records its time. The OAuth ``state`` must come back unchanged, once. A provider
that refuses or fails is shown as a clear error page, never a 500. Without a client
ID the login page says how to configure it, and the CLI path still works.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Callable
from http.cookies import SimpleCookie
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from apinalytics import __main__ as cli
from apinalytics.accounts import sessions
from apinalytics.settings import Settings

from .fake_github import FakeGitHub
from .flow import authorize, log_in, start_login

Browser = aiohttp.ClientSession


async def logged_in(browser: Browser) -> bool:
    resp = await browser.get("/apps", allow_redirects=False)
    return resp.status == 200


async def assert_login_failed(resp: aiohttp.ClientResponse, status: int, *mentions: str) -> str:
    """A login error is an HTML page with a title, a message and a way back."""
    text = await resp.text()
    assert resp.status == status, text
    assert resp.content_type == "text/html"
    assert '<h1 id="error-title">Login failed</h1>' in text
    for m in mentions:
        assert m in text, f"{m!r} not on the error page"
    assert 'href="/"' in text
    return text


async def test_first_login_creates_the_user_and_a_session(
    new_browser: Callable[[], Browser],
    github: FakeGitHub,
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    browser = new_browser()
    assert not await logged_in(browser)

    to_github = await start_login(browser)
    assert str(to_github.with_query(None)) == github.authorize_url
    sent = github.authorize_requests
    assert to_github.query["redirect_uri"].startswith("http://127.0.0.1:")
    assert to_github.query["redirect_uri"].endswith("/login/callback")
    assert to_github.query["state"]
    back = await authorize(browser, to_github)
    resp = await browser.get(back.path_qs, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/apps"

    # The token request carried the client credentials and the same redirect URI.
    (token_request,) = github.token_requests
    assert token_request["client_secret"] == "test-client-secret"
    assert token_request["redirect_uri"] == sent[0]["redirect_uri"]
    assert token_request["grant_type"] == "authorization_code"

    page = await browser.get("/apps")
    assert page.status == 200
    assert "alice" in await page.text()
    row = await db.fetchrow("SELECT * FROM users")
    assert (row["github_id"], row["login"], row["name"]) == (1001, "alice", "Alice Example")
    assert row["last_login_at"] is not None
    # Neither the access token nor the client secret reaches the logs, at any level.
    (access_token,) = github.tokens
    logged = caplog.text + "".join(str(vars(r)) for r in caplog.records)
    assert access_token not in logged and "test-client-secret" not in logged


async def test_session_cookie_is_httponly_lax_and_not_secure_over_http(
    new_browser: Callable[[], Browser],
) -> None:
    browser = new_browser()
    resp = await browser.get("/login", allow_redirects=False)
    cookie = SimpleCookie(resp.headers["Set-Cookie"])[sessions.COOKIE_NAME]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"
    assert not cookie["secure"]
    assert cookie["path"] == "/"
    # Encrypted: neither the state nor anything else is readable in the cookie.
    assert resp.headers["Location"].split("state=")[1].split("&")[0] not in cookie.value


async def test_behind_https_the_cookie_is_secure_and_the_callback_public(
    make_client: Callable[[Settings], object], settings: Settings
) -> None:
    public = settings.model_copy(update={"public_url": "https://analytics.example.com/"})
    client: TestClient = await make_client(public)  # type: ignore[assignment]
    resp = await client.get("/login", allow_redirects=False)
    assert resp.status == 302
    cookie = SimpleCookie(resp.headers["Set-Cookie"])[sessions.COOKIE_NAME]
    assert cookie["secure"] is True
    location = aiohttp.client.URL(resp.headers["Location"])
    assert location.query["redirect_uri"] == "https://analytics.example.com/login/callback"


async def test_a_renamed_github_user_stays_the_same_user(
    new_browser: Callable[[], Browser], github: FakeGitHub, db: asyncpg.Connection
) -> None:
    await log_in(new_browser(), github, "alice")
    first = await db.fetchrow("SELECT id, last_login_at FROM users")
    github.users["alice"]["login"] = "alice-renamed"
    browser = new_browser()
    await log_in(browser, github, "alice")
    rows = await db.fetch("SELECT id, login, last_login_at FROM users")
    assert len(rows) == 1
    assert rows[0]["id"] == first["id"]
    assert rows[0]["login"] == "alice-renamed"
    assert rows[0]["last_login_at"] > first["last_login_at"]
    assert "alice-renamed" in await (await browser.get("/apps")).text()


@pytest.mark.parametrize("tamper", ["changed_state", "missing_state", "no_login_started_here"])
async def test_a_wrong_state_is_rejected(
    new_browser: Callable[[], Browser], github: FakeGitHub, tamper: str
) -> None:
    browser = new_browser()
    back = await authorize(browser, await start_login(browser))
    if tamper == "changed_state":
        back = back.update_query(state=back.query["state"] + "x")
    elif tamper == "missing_state":
        back = back.without_query_params("state")
    elif tamper == "no_login_started_here":
        # An attacker's own authorization answer, planted in the victim's browser.
        browser = new_browser()
    resp = await browser.get(back.path_qs, allow_redirects=False)
    await assert_login_failed(resp, 400, "OAuth state does not match")
    assert github.token_requests == [], "no code exchanged after a bad state"
    assert not await logged_in(browser)


@pytest.mark.parametrize("first_outcome", ["logged_in", "code_refused"])
async def test_the_state_is_spent_after_one_answer(
    new_browser: Callable[[], Browser], github: FakeGitHub, first_outcome: str
) -> None:
    browser = new_browser()
    back = await authorize(browser, await start_login(browser))
    github.token_failure = "refused" if first_outcome == "code_refused" else None
    first = await browser.get(back.path_qs, allow_redirects=False)
    assert first.status == (303 if first_outcome == "logged_in" else 400)
    github.token_failure = None
    exchanged = len(github.token_requests)
    again = await browser.get(back.path_qs, allow_redirects=False)
    await assert_login_failed(again, 400, "OAuth state does not match")
    assert len(github.token_requests) == exchanged


@pytest.mark.parametrize(
    ("token_failure", "user_failure", "status", "mention"),
    [
        pytest.param("refused", None, 400, "bad_verification_code", id="code_refused"),
        pytest.param("server_error", None, 502, "HTTP 500", id="token_endpoint_500"),
        pytest.param("not_json", None, 502, "unexpected answer", id="token_not_json"),
        pytest.param(None, "server_error", 502, "GitHub profile", id="user_api_500"),
    ],
)
async def test_a_failed_token_exchange_is_a_clear_error_page(
    new_browser: Callable[[], Browser],
    github: FakeGitHub,
    db: asyncpg.Connection,
    token_failure: str | None,
    user_failure: str | None,
    status: int,
    mention: str,
) -> None:
    browser = new_browser()
    back = await authorize(browser, await start_login(browser))
    github.token_failure, github.user_failure = token_failure, user_failure
    resp = await browser.get(back.path_qs, allow_redirects=False)
    await assert_login_failed(resp, status, mention, "again")
    assert not await logged_in(browser)
    assert await db.fetchval("SELECT count(*) FROM users") == 0


async def test_github_unreachable_is_a_clear_error_page(
    make_client: Callable[[Settings], object], settings: Settings, github: FakeGitHub
) -> None:
    # A port nothing listens on: port 9 (discard) is not served on test machines.
    down = settings.model_copy(update={"github_token_url": "http://127.0.0.1:9/token"})
    client: TestClient = await make_client(down)  # type: ignore[assignment]
    resp = await client.get("/login", allow_redirects=False)
    back = await authorize(client.session, aiohttp.client.URL(resp.headers["Location"]))
    resp = await client.get(back.path_qs, allow_redirects=False)
    await assert_login_failed(resp, 502, "connection failed")


async def test_access_denied_on_github_is_a_clear_error_page(
    new_browser: Callable[[], Browser], github: FakeGitHub
) -> None:
    github.authorize_error = "access_denied"
    browser = new_browser()
    back = await authorize(browser, await start_login(browser))
    resp = await browser.get(back.path_qs, allow_redirects=False)
    await assert_login_failed(resp, 400, "did not grant", "The user denied.")
    assert github.token_requests == []


async def test_logout_ends_the_session(
    new_browser: Callable[[], Browser], github: FakeGitHub
) -> None:
    from .flow import csrf_token

    browser = new_browser()
    await log_in(browser, github, "alice")
    token = await csrf_token(browser)
    resp = await browser.post("/logout", data={"csrf_token": token}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/"
    assert not await logged_in(browser)


def test_without_a_client_id_login_explains_setup_and_the_cli_works(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """Sync on purpose: the CLI runs its own event loop."""
    import asyncio

    from aiohttp.test_utils import TestClient, TestServer

    from apinalytics.app import create_app

    bare = settings.model_copy(update={"github_client_id": None, "github_client_secret": None})

    async def pages() -> tuple[int, str, int, str]:
        async with TestClient(TestServer(create_app(bare, run_migrations=False))) as c:
            landing = await c.get("/")
            login = await c.get("/login", allow_redirects=False)
            return landing.status, await landing.text(), login.status, await login.text()

    landing_status, landing, login_status, login = asyncio.run(pages())
    assert landing_status == 200 and 'href="/login"' in landing
    assert login_status == 200
    assert "APINALYTICS_GITHUB_CLIENT_ID" in login
    assert "/login/callback" in login
    assert "apinalytics apps create --name" in login

    with pytest.raises(SystemExit) as exit_:
        cli.main(
            [
                "apps",
                "create",
                "--name",
                "cli-app",
                "--json",
                "--database-url",
                str(bare.database_url),
            ]
        )
    assert exit_.value.code == 0
    created = json.loads(capsys.readouterr().out)
    assert set(created) == {"app_id", "write_key", "read_key"}


def test_the_development_session_secret_is_generated_once_and_private(tmp_path: Path) -> None:
    s = Settings(home=tmp_path / "home", database_url="postgresql://unused/")
    first = sessions.secret(s)
    path = tmp_path / "home" / sessions.SECRET_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sessions.secret(s) == first
    assert sorted(p.name for p in path.parent.iterdir()) == [sessions.SECRET_FILE]


@pytest.mark.parametrize(
    ("secret", "ok"),
    [
        pytest.param("x" * 10, False, id="too_short"),
        pytest.param("A" * 43 + "=", True, id="fernet_key"),
    ],
)
def test_a_configured_session_secret_must_be_a_fernet_key(
    tmp_path: Path, secret: str, ok: bool
) -> None:
    s = Settings(home=tmp_path, session_secret=secret)
    if ok:
        assert sessions.secret(s) == secret
        assert not (tmp_path / sessions.SECRET_FILE).exists()
    else:
        with pytest.raises(ValueError, match="APINALYTICS_SESSION_SECRET"):
            sessions.secret(s)
