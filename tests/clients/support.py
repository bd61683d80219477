"""Helpers of the client's tests: reading events back through the query API, and a
tiny scripted HTTP server on 127.0.0.1 that answers what a test tells it to."""

from __future__ import annotations

import gzip
import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp.test_utils import TestClient

from apinalytics.apps import NewApp

from ..helpers import read_headers


def service_url(client: TestClient) -> str:
    return str(client.make_url("/"))


async def counts(client: TestClient, app: NewApp, group: str, since: float = 0) -> dict[str, int]:
    """Events per value of ``group`` (an event field, or ``data.<key>``), from ``since``
    to an hour ahead, through ``GET /1/timeseries``."""
    start, end = int(since or time.time() - 3600), int(time.time() + 3600)
    resp = await client.get(
        f"/1/timeseries/{start}/{end}/", params={"group": group}, headers=read_headers(app)
    )
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    return {k: pairs[0][1] for k, pairs in body["groups"].items() if pairs}


async def total(client: TestClient, app: NewApp) -> int:
    return sum((await counts(client, app, "method")).values())


@dataclass
class Seen:
    """One request the scripted server received."""

    at: float
    headers: dict[str, str]
    events: list[dict[str, Any]]


@dataclass
class Script:
    """Answers to give, in order (the last one repeats): (status, headers, body)."""

    answers: list[tuple[int, dict[str, str], bytes]]
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_answer(self) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def ok(n: int = 0) -> tuple[int, dict[str, str], bytes]:
    return 200, {}, json.dumps({"accepted": n}).encode()


def error(
    status: int, code: str, message: str, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return status, headers, body


@contextmanager
def scripted_server(*answers: tuple[int, dict[str, str], bytes]) -> Iterator[tuple[str, Script]]:
    """An HTTP server on 127.0.0.1 answering POSTs from ``answers``; yields its URL and
    the script (whose ``seen`` lists what arrived)."""
    script = Script(list(answers))

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                raw = gzip.decompress(raw)
            script.seen.append(Seen(time.monotonic(), dict(self.headers), json.loads(raw)))
            status, headers, body = script.next_answer()
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", script
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def hanging_server() -> Iterator[str]:
    """A server that accepts connections and never answers (nor reads)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
                accepted.append(conn)
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(2)
        for conn in accepted:
            conn.close()
        sock.close()
