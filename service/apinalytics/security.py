"""Security headers of every response (on_response_prepare, so streamed responses,
errors and static files get them too).

Pages and the dashboard get a strict Content-Security-Policy: scripts and styles only
from the service itself (no inline script, no eval: templates and dashboard load
theirs from files), no framing by other sites. The dashboard may ask another
APInalytics service for data (its "Service" field), hence ``connect-src`` of any
http(s) origin. API responses are JSON, never rendered: they only need nosniff.
"""

from __future__ import annotations

from aiohttp import web

from .middleware import API_PREFIX

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self' http: https:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


async def headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["X-Content-Type-Options"] = "nosniff"
    if not request.path.startswith(API_PREFIX):
        response.headers.update(PAGE_HEADERS)
