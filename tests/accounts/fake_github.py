"""A fake GitHub OAuth provider served on localhost: authorize, token and user API.

It behaves like github.com where the service can tell: the authorize endpoint
redirects back with ``code`` and the caller's ``state`` (the user is whoever
``login_as`` names, as if they had clicked "Authorize"); the token endpoint answers
a bad code with HTTP 200 and an ``error`` body; the user API wants the bearer token.
``token_failure`` and ``user_failure`` make those endpoints fail in chosen ways.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from yarl import URL

CLIENT_ID = "Iv1.testclient"
CLIENT_SECRET = "test-client-secret"

USERS: dict[str, dict[str, Any]] = {
    "alice": {"id": 1001, "login": "alice", "name": "Alice Example"},
    "bob": {"id": 2002, "login": "bob", "name": None},
}


@dataclass
class FakeGitHub:
    base_url: str = ""
    login_as: str = "alice"
    # None, or "access_denied": the user clicks "Cancel" on GitHub.
    authorize_error: str | None = None
    # None, "refused" (bad_verification_code), "server_error" (HTTP 500), "not_json".
    token_failure: str | None = None
    # None, or "server_error" (HTTP 500).
    user_failure: str | None = None
    users: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {k: dict(v) for k, v in USERS.items()}
    )
    codes: dict[str, tuple[str, str]] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    authorize_requests: list[dict[str, str]] = field(default_factory=list)

    @property
    def authorize_url(self) -> str:
        return self.base_url + "/login/oauth/authorize"

    @property
    def token_url(self) -> str:
        return self.base_url + "/login/oauth/access_token"

    @property
    def api_url(self) -> str:
        return self.base_url + "/api/v3"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/login/oauth/authorize", self.authorize)
        app.router.add_post("/login/oauth/access_token", self.token)
        app.router.add_get("/api/v3/user", self.user)
        return app

    async def authorize(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        self.authorize_requests.append(q)
        if q.get("client_id") != CLIENT_ID or q.get("response_type") != "code":
            return web.Response(status=400, text="bad authorize request")
        back = URL(q["redirect_uri"])
        if self.authorize_error:
            params = {"error": self.authorize_error, "error_description": "The user denied."}
        else:
            code = secrets.token_hex(10)
            self.codes[code] = (self.login_as, q["redirect_uri"])
            params = {"code": code}
        if "state" in q:
            params["state"] = q["state"]
        raise web.HTTPFound(str(back.update_query(params)))

    async def token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.token_requests.append(form)
        if self.token_failure == "server_error":
            return web.Response(status=500, text="Internal Server Error")
        if self.token_failure == "not_json":
            return web.Response(
                status=200, text="<html>rate limited</html>", content_type="text/html"
            )
        known = self.codes.pop(form.get("code", ""), None)
        if (
            self.token_failure == "refused"
            or known is None
            or known[1] != form.get("redirect_uri")
            or form.get("client_id") != CLIENT_ID
            or form.get("client_secret") != CLIENT_SECRET
        ):
            return web.json_response(
                {
                    "error": "bad_verification_code",
                    "error_description": "The code passed is incorrect or expired.",
                }
            )
        token = "gho_" + secrets.token_hex(16)
        self.tokens[token] = known[0]
        return web.json_response({"access_token": token, "token_type": "bearer", "scope": ""})

    async def user(self, request: web.Request) -> web.Response:
        if self.user_failure == "server_error":
            return web.Response(status=500, text="Internal Server Error")
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        login = self.tokens.get(token) if scheme.lower() in ("bearer", "token") else None
        if login is None:
            return web.json_response({"message": "Bad credentials"}, status=401)
        return web.json_response(self.users[login])
