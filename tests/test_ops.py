"""SPEC "Operations" and "Errors".

- ``/healthz``: the process is alive (even with the database down: see test_outage).
- ``/readyz``: 200 when the database is reachable and migrated (pending migrations:
  see test_migrate).
- ``/metrics``: Prometheus text format with events accepted and rejected and request
  latencies.
- Every error body is JSON ``{"error": {"code", "message", "details"?}}``, also for an
  unknown route (404) and a wrong method (405).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from apinalytics.apps import NewApp
from apinalytics.settings import Settings

from .helpers import assert_error, event, read_headers, write_headers


@pytest.mark.parametrize("path", ["/healthz", "/healthz/"])
async def test_healthz(client: TestClient, path: str) -> None:
    resp = await client.get(path)
    assert resp.status == 200
    assert await resp.json() == {"status": "ok"}


@pytest.mark.parametrize("path", ["/readyz", "/readyz/"])
async def test_readyz_when_migrated(client: TestClient, path: str) -> None:
    resp = await client.get(path)
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"status": "ready"}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_count_accepted_and_rejected_events(
    client: TestClient, app_keys: NewApp
) -> None:
    h = write_headers(app_keys)
    assert (await client.post("/1/events/", json=[event()] * 3, headers=h)).status == 200
    assert (await client.post("/1/events", json=[event()] * 2, headers=h)).status == 200
    bad_batch = [event(), event(), event(response_us=-1), event()]
    assert (await client.post("/1/events/", json=bad_batch, headers=h)).status == 400
    not_json = await client.post(
        "/1/events/", data=b"{", headers={**h, "Content-Type": "application/json"}
    )
    assert not_json.status == 400
    wrong_key = {**h, "X-Auth-Key": "apw_wrong"}
    assert (await client.post("/1/events/", json=[event()], headers=wrong_key)).status == 401
    plain = {**h, "Content-Type": "text/plain"}
    assert (await client.post("/1/events/", data=b"[]", headers=plain)).status == 415

    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    got = samples(await resp.text())
    assert got[("apinalytics_events_accepted_total", ())] == 5
    assert got[("apinalytics_events_rejected_total", (("reason", "invalid_events"),))] == 4
    # A body that is not JSON has no events to count; the reason still shows.
    assert ("apinalytics_events_rejected_total", (("reason", "invalid_json"),)) in got
    # Requests refused, whole bodies and wrong keys included, one each.
    batches = {
        dict(labels)["reason"]: v
        for (name, labels), v in got.items()
        if name == "apinalytics_batches_rejected_total"
    }
    assert batches == {
        "invalid_events": 1,
        "invalid_json": 1,
        "unauthorized": 1,
        "unsupported_media_type": 1,
    }
    ok_posts = [
        v
        for (name, labels), v in got.items()
        if name == "apinalytics_request_seconds_count"
        and dict(labels).get("method") == "POST"
        and dict(labels).get("status") == "200"
    ]
    assert sum(ok_posts) == 2


async def test_metrics_count_the_events_of_a_batch_over_the_limit(
    app_keys: NewApp, make_client: Callable[[Settings], Any], settings: Settings
) -> None:
    client: TestClient = await make_client(settings.model_copy(update={"max_batch_events": 5}))
    resp = await client.post("/1/events/", json=[event()] * 6, headers=write_headers(app_keys))
    await assert_error(resp, 413, "payload_too_large")
    got = samples(await (await client.get("/metrics")).text())
    assert got[("apinalytics_events_rejected_total", (("reason", "payload_too_large"),))] == 6
    assert got[("apinalytics_events_accepted_total", ())] == 0


async def test_metrics_of_one_instance_are_its_own(
    client: TestClient, app_keys: NewApp, make_client: object, settings: object
) -> None:
    """No global registry: a second app in the same process starts from zero."""
    h = write_headers(app_keys)
    await client.post("/1/events/", json=[event()], headers=h)
    other: TestClient = await make_client(settings)  # type: ignore[operator]
    got = samples(await (await other.get("/metrics")).text())
    assert got[("apinalytics_events_accepted_total", ())] == 0


# -- the error shape everywhere ------------------------------------------------------------

NOT_FOUND = [
    ("api_unknown_route", "/1/nothing/here"),
    ("api_version_2", "/2/events/"),
    ("timeseries_missing_end", "/1/timeseries/100/"),
    ("unknown_top_level", "/no-such-page.php"),
]


@pytest.mark.parametrize("path", [n[1] for n in NOT_FOUND], ids=[n[0] for n in NOT_FOUND])
async def test_unknown_route_is_json_404(client: TestClient, path: str) -> None:
    resp = await client.get(path)
    await assert_error(resp, 404, "not_found", path)


WRONG_METHOD = [
    ("get_ingest", "GET", "/1/events/", "POST"),
    ("put_ingest", "PUT", "/1/event", "POST"),
    ("delete_ingest", "DELETE", "/1/events", "POST"),
    ("post_timeseries", "POST", "/1/timeseries/0/60/", "GET"),
    ("post_healthz", "POST", "/healthz", "GET"),
]


@pytest.mark.parametrize(("method", "path", "allowed"), [w[1:] for w in WRONG_METHOD],
                         ids=[w[0] for w in WRONG_METHOD])  # fmt: skip
async def test_wrong_method_is_json_405(
    client: TestClient, method: str, path: str, allowed: str
) -> None:
    resp = await client.request(method, path)
    await assert_error(resp, 405, "method_not_allowed", method, allowed)
    assert allowed in resp.headers["Allow"]


async def test_error_bodies_are_json_with_the_error_content_type(
    client: TestClient, app_keys: NewApp
) -> None:
    resp = await client.post(
        "/1/events/", data=b"[1]", headers={**write_headers(app_keys), "Content-Type": "x/y"}
    )
    err = await assert_error(resp, 415, "unsupported_media_type")
    assert json.loads(await resp.read()) == {"error": err}


async def test_a_redirect_is_recorded_with_its_status(client: TestClient) -> None:
    resp = await client.get("/dashboard", allow_redirects=False)
    assert resp.status in (301, 308), resp.status
    got = samples(await (await client.get("/metrics")).text())
    statuses = {
        dict(labels)["status"]: v
        for (name, labels), v in got.items()
        if name == "apinalytics_request_seconds_count" and dict(labels)["route"] == "/dashboard"
    }
    assert statuses == {str(resp.status): 1}


async def test_a_body_cut_short_is_no_server_error(
    client: TestClient, app_keys: NewApp, caplog: pytest.LogCaptureFixture
) -> None:
    assert client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    head = (
        f"POST /1/events/ HTTP/1.1\r\nHost: x\r\nX-Auth-User: {app_keys.app_id}\r\n"
        f"X-Auth-Key: {app_keys.write_key}\r\nContent-Type: application/json\r\n"
        "Content-Length: 500\r\n\r\n[{"
    )
    with caplog.at_level(logging.INFO):
        writer.write(head.encode())
        await writer.drain()
        writer.write_eof()  # the client is done sending, 497 bytes short
        # The server sees the connection closed: its answer (a 400) has nowhere to go.
        await asyncio.wait_for(reader.read(), 15)
        writer.close()
        for _ in range(100):
            logged = [r for r in caplog.records if r.getMessage() == "request"]
            if logged:
                break
            await asyncio.sleep(0.05)
    # 400 when the handler read the short body, 499 when aiohttp cancelled it first.
    assert [getattr(r, "status", None) for r in logged] in ([400], [499])
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    "request_line",
    [b"GET /1/time series/0/60/ HTTP/1.1", b"GET /healthz HTTP/1.1\r\nBad\x01Header: x"],
    ids=["space_in_target", "control_character_in_header"],
)
async def test_a_malformed_request_is_a_400_and_one_info_line(
    client: TestClient, caplog: pytest.LogCaptureFixture, request_line: bytes
) -> None:
    assert client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    with caplog.at_level(logging.INFO):
        writer.write(request_line + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 15)
        writer.close()
    assert answer.split(b" ", 2)[1] == b"400", answer
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    [line] = [r for r in caplog.records if r.getMessage().startswith("malformed request")]
    assert line.levelname == "INFO" and line.exc_info is None and getattr(line, "error", "")


async def test_every_statement_of_a_query_is_timed_and_logged(
    client: TestClient, app_keys: NewApp, caplog: pytest.LogCaptureFixture
) -> None:
    """DESIGN "all SQL goes through one path": the key check, the retention horizons the
    planner reads, the parallel-worker setting of a raw read and the query itself, each
    logged with its label and duration."""
    now = int(time.time())
    url = f"/1/timeseries/{now - 3600}/{now}/?granularity=minute&aggregation=percentile_50"
    with caplog.at_level(logging.DEBUG, logger="apinalytics.db"):
        resp = await client.get(url, headers=read_headers(app_keys))
    assert resp.status == 200, await resp.text()
    timed = [r for r in caplog.records if r.name == "apinalytics.db" and r.getMessage() == "sql"]
    labels = {getattr(r, "label", None) for r in timed}
    assert {
        "authenticate",
        "horizons, pending stretches",
        "parallel workers",
        "timeseries",
    } <= labels
    assert all(isinstance(getattr(r, "ms", None), float) for r in timed)
