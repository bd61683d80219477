"""GitHub OAuth (authorization code flow) with authlib's async client.

The three URLs come from settings, so GitHub Enterprise works (and tests use a
local provider). The ``state`` authlib generates is kept in the session by the
caller and checked on the way back. Access tokens are used once, to read the
user, and neither stored nor logged.
"""

from __future__ import annotations

import logging

import httpx2
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError
from pydantic import BaseModel, ValidationError

from ..errors import SystemFault, UserError
from ..settings import Settings

log = logging.getLogger(__name__)


class LoginFailed(UserError):
    """The login cannot go on (state mismatch, access denied, code refused)."""

    code = "login_failed"


class ProviderFailed(SystemFault):
    """GitHub could not be reached or answered something unusable."""

    status = 502
    code = "github_unavailable"


class GitHubUser(BaseModel):
    """The fields of GitHub's ``GET /user`` we keep; the rest is ignored."""

    id: int
    login: str
    name: str | None = None


def configured(settings: Settings) -> bool:
    return bool(settings.github_client_id and settings.github_client_secret)


def _client(settings: Settings, redirect_uri: str) -> AsyncOAuth2Client:
    return AsyncOAuth2Client(
        client_id=settings.github_client_id,
        client_secret=settings.github_client_secret,
        redirect_uri=redirect_uri,
        # GitHub documents the client credentials as form fields of the token request.
        token_endpoint_auth_method="client_secret_post",
        timeout=settings.github_timeout_s,
    )


async def authorization_url(settings: Settings, redirect_uri: str) -> tuple[str, str]:
    """Where to send the browser, and the state to expect back.

    No scope is asked for: logging in needs only the public profile.
    """
    async with _client(settings, redirect_uri) as client:
        url, state = client.create_authorization_url(settings.github_authorize_url)
    return str(url), str(state)


async def fetch_user(settings: Settings, redirect_uri: str, code: str) -> GitHubUser:
    """Exchange the code for a token and read the user it belongs to."""
    async with _client(settings, redirect_uri) as client:
        try:
            # authlib asks for JSON (Accept), which GitHub otherwise answers form-encoded.
            await client.fetch_token(settings.github_token_url, code=code)
        except OAuthError as exc:
            # GitHub answers a bad or spent code with 200 and an error body.
            log.info("token exchange refused", extra={"error": exc.error})
            reason = exc.description or exc.error
            raise LoginFailed(
                f"GitHub refused the login ({exc.error}: {reason}). Start again from the "
                "login page."
            ) from exc
        except (httpx2.HTTPError, ValueError) as exc:
            log.warning("token exchange failed: %s", type(exc).__name__)
            raise ProviderFailed(
                f"Could not get a login token from GitHub ({_what(exc)}). Try again in a moment."
            ) from exc
        try:
            resp = await client.get(
                settings.github_api_url.rstrip("/") + "/user",
                headers={"Accept": "application/vnd.github+json"},
            )
            resp.raise_for_status()
            return GitHubUser.model_validate_json(resp.content)
        except (httpx2.HTTPError, ValidationError) as exc:
            log.warning("reading the GitHub user failed: %s", type(exc).__name__)
            raise ProviderFailed(
                f"Could not read your GitHub profile ({_what(exc)}). Try again in a moment."
            ) from exc


def _what(exc: Exception) -> str:
    if isinstance(exc, httpx2.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, httpx2.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx2.HTTPError):
        return "connection failed"
    return "unexpected answer"
