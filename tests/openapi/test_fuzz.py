"""The service holds its OpenAPI contract under generated requests (schemathesis).

``apinalytics serve`` runs in a child process on a database of its own; schemathesis
reads the service's own ``/openapi.json`` and sends, for every operation, requests
made from it, valid and invalid (its positive and negative modes), with the app's
keys. For each answer:

- no 5xx;
- the status, content type, headers and body are ones the document describes;
- a request the document says is invalid is refused with a 4xx;
- a refused ingest request stored nothing, and an accepted one stored what it says
  (the events table is counted before and after each one).

The suite runs a few examples per operation, derandomized (the same ones every run);
``make fuzz`` runs many more (``FUZZ_EXAMPLES``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import hypothesis
import pytest
import requests
import schemathesis
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from apinalytics import apps, openapi
from apinalytics.app import create_app
from apinalytics.localdb import free_port
from apinalytics.settings import Settings

from ..dbs import Servers

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
SECURITY = {op.path: op.security for op in openapi.OPERATIONS}


@dataclass
class Live:
    base: str
    dsn: str
    app: apps.NewApp

    def headers(self, case: Case) -> dict[str, str]:
        kind = SECURITY[case.path]
        key = {"write": self.app.write_key, "read": self.app.read_key}.get(kind or "")
        return {"X-Auth-User": self.app.app_id, "X-Auth-Key": key} if key else {}

    def events(self) -> int:
        async def count() -> int:
            conn = await asyncpg.connect(self.dsn)
            try:
                n: int = await conn.fetchval("SELECT count(*) FROM events")
            finally:
                await conn.close()
            return n

        return asyncio.run(count())


@pytest.fixture(scope="module")
def live(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    if "apache" not in servers.servers:
        pytest.skip(servers.missing.get("apache", "no TimescaleDB server"))
    server = servers.servers["apache"]
    name = server.new_database()
    dsn = server.dsn(name)
    tmp = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    log = (tmp / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "apinalytics", "serve", "--port", str(port), "--no-migrate"],
        env={
            **os.environ,
            "APINALYTICS_DATABASE_URL": dsn,
            "APINALYTICS_HOME": str(tmp / "home"),
        },
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, proc, tmp / "serve.log")

        async def create() -> apps.NewApp:
            conn = await asyncpg.connect(dsn)
            try:
                return await apps.create(conn, "fuzzed")
            finally:
                await conn.close()

        yield Live(base, dsn, asyncio.run(create()))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        log.close()
        server.drop_database(name)
    assert proc.returncode == 0, (tmp / "serve.log").read_text()


def _wait_ready(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited with {proc.returncode}: {log.read_text()}")
        try:
            if requests.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"serve never became ready: {log.read_text()}")


# The document the live service serves (test_it_fuzzes_the_served_document checks so):
# built here at collection, since schemathesis' fixture-loaded schemas do not run
# under this pytest.
DOCUMENT = openapi.document(
    Settings(),
    openapi.routes(create_app(Settings(database_url="postgresql://unused"))),
)


@schemathesis.serializer("application/x-protobuf")
def _protobuf(ctx: object, value: object) -> bytes:
    """OTLP's binary body as generated: arbitrary bytes, which the service must refuse
    with a 400 (or take, if they happen to decode) and never a 5xx."""
    return value if isinstance(value, bytes) else str(value).encode()


schema = schemathesis.openapi.from_dict(DOCUMENT)
schema.config.generation.update(
    # Unknown query parameters are ignored on purpose (cache busters such as _=...).
    allow_extra_parameters=False,
    # The app's real keys are sent with every request instead.
    with_security_parameters=False,
)


def test_it_fuzzes_the_served_document(live: Live) -> None:
    served = requests.get(f"{live.base}/openapi.json", timeout=10)
    assert served.status_code == 200
    assert served.json() == DOCUMENT


@schema.parametrize()
@hypothesis.settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_the_service_holds_its_contract(case: Case, live: Live) -> None:
    ingest = case.method.upper() == "POST" and SECURITY[case.path] == "write"
    before = live.events() if ingest else 0
    response = case.call(base_url=live.base, headers=live.headers(case), timeout=30)
    case.validate_response(response, checks=CHECKS)
    if not ingest:
        return
    stored = live.events() - before
    if response.status_code != 200:
        assert stored == 0, f"{response.status_code} answered, yet {stored} events stored"
        return
    if case.path == "/v1/traces":
        # An OTLP answer carries no count: at most one event per span sent is stored.
        assert stored <= _spans(case.body), (case.body, stored)
        return
    accepted = response.json()["accepted"]
    replay = "Idempotency-Key" in (case.headers or {})
    assert stored == accepted or (replay and stored == 0), (accepted, stored)


def _spans(body: object) -> int:
    """The spans of an OTLP JSON body (0 for anything else)."""
    if not isinstance(body, dict):
        return 0
    return sum(
        len(scope.get("spans") or [])
        for resource in body.get("resourceSpans") or []
        if isinstance(resource, dict)
        for scope in resource.get("scopeSpans") or []
        if isinstance(scope, dict)
    )
