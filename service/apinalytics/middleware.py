"""Request middlewares: error rendering, CORS for the API, timing and access logs."""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from .errors import ApiError, MethodNotAllowed, NotFound, UserError
from .keys import METRICS, REQUEST_APP_ID

log = logging.getLogger("apinalytics.http")

API_PREFIX = "/1/"
# Error codes of requests refused to keep within bounds, counted by reason in /metrics.
REJECTIONS = frozenset(
    {
        "overloaded",
        "rate_limited",
        "payload_too_large",
        "too_many_includes",
        "too_many_groups",
        "query_timeout",
    }
)
CLIENT_GONE = 499
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    # What a script may read of an answer: every header the API sends beyond the
    # CORS-safelisted ones (X-Apinalytics-Planner is a request header: allowed below).
    "Access-Control-Expose-Headers": (
        "X-Apinalytics-Sources, X-Apinalytics-Read-From, Retry-After, "
        "RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset"
    ),
}
PREFLIGHT_HEADERS = {
    **CORS_HEADERS,
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": (
        "X-Auth-User, X-Auth-Key, Content-Type, Content-Encoding, Idempotency-Key, "
        "X-Apinalytics-Planner, X-Apinalytics-Consistency"
    ),
    "Access-Control-Max-Age": "86400",
}


def render(exc: ApiError) -> web.Response:
    return web.json_response(exc.body(), status=exc.status, headers=exc.headers)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place that turns exceptions into ``{"error": {...}}`` bodies."""
    try:
        return await handler(request)
    except ApiError as exc:
        if not isinstance(exc, UserError):
            log.warning("request failed: %s", exc.message, extra={"code": exc.code})
        if exc.code in REJECTIONS:
            request.app[METRICS].requests_rejected.labels(reason=exc.code).inc()
        return render(exc)
    except web.HTTPNotFound:
        return render(NotFound(f"No such resource: {request.path}"))
    except web.HTTPMethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.allowed_methods))
        # RFC 9110: a 405 carries Allow.
        return render(
            MethodNotAllowed(
                f"{request.method} is not allowed here; use {allowed}.",
                headers={"Allow": allowed},
            )
        )
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json":
            err = UserError(exc.reason, code=exc.reason.lower().replace(" ", "_"))
            err.status = exc.status
            return render(err)
        raise
    except Exception:
        log.exception("unhandled error", extra={"path": request.path})
        return render(ApiError("An internal error occurred; it has been logged."))


@web.middleware
async def cors_preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The API may be called from any origin (dashboards opened from disk or another host).

    Keys travel in headers, never cookies, so allowing every origin exposes nothing.
    """
    if (
        request.path.startswith(API_PREFIX)
        and request.method == "OPTIONS"
        and "Access-Control-Request-Method" in request.headers
    ):
        return web.Response(status=204, headers=PREFLIGHT_HEADERS)
    return await handler(request)


async def cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every API response, streamed or not, error or not."""
    if request.path.startswith(API_PREFIX):
        response.headers.update(CORS_HEADERS)


@web.middleware
async def timing(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:  # redirects, and what the errors middleware re-raises
        status = exc.status
        raise
    except asyncio.CancelledError:
        # Cancelled: aiohttp does so when the client closes the connection mid-request,
        # and shutdown does after its grace period. Nobody gets an answer: recorded as
        # nginx's 499 ("client closed request"), not as a server error.
        status = CLIENT_GONE
        raise
    finally:
        elapsed = time.perf_counter() - started
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        request.app[METRICS].request_seconds.labels(name, request.method, str(status)).observe(
            elapsed
        )
        log.info(
            "request",
            extra={
                "method": request.method,
                "path": request.path,
                "status": status,
                "ms": round(elapsed * 1000, 2),
                "app_id": request.get(REQUEST_APP_ID),
            },
        )
