"""Run by test_package under each Python the client claims (3.9 and later), with only
the client on the path: both senders, the ASGI and the WSGI middleware, sending to a
local HTTP server that decodes what arrives. Standard library only; prints the URLs
received."""

from __future__ import annotations

import asyncio
import gzip
import http.server
import json
import threading
from typing import Any

from apinalytics_client import AsyncSender, Sender
from apinalytics_client.asgi import ApinalyticsMiddleware
from apinalytics_client.wsgi import ApinalyticsWSGI

seen: list[dict[str, Any]] = []


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = gzip.decompress(self.rfile.read(int(self.headers["Content-Length"])))
        seen.extend(json.loads(body))
        answer = b'{"accepted": 1}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hi"})


def wsgi_app(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [])
    return [b"hi"]


async def asynchronous(url: str, sender: Sender) -> None:
    async def receive() -> dict[str, str]:
        return {"type": "http.request"}

    async def send(message: Any) -> None:
        pass

    scope = {"type": "http", "method": "GET", "path": "/asgi", "query_string": b"token=1&a=2"}
    await ApinalyticsMiddleware(asgi_app, sender)(scope, receive, send)
    a = AsyncSender("app", "key", url, max_age_s=0.05)
    a.record(method="GET", url="/async", status_code=200, response_us=1)
    assert await a.close(5)


def main() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    sender = Sender("app", "key", url, max_age_s=0.05)
    asyncio.run(asynchronous(url, sender))
    environ = {"PATH_INFO": "/wsgi", "REQUEST_METHOD": "GET", "QUERY_STRING": ""}
    body = ApinalyticsWSGI(wsgi_app, sender)(environ, lambda *args: None)
    list(body)
    body.close()  # type: ignore[attr-defined]
    assert sender.close(5)
    print(" ".join(sorted(event["url"] for event in seen)))


if __name__ == "__main__":
    main()
