"""What ``POST /v1/traces`` costs on the CPU before the write: decoding an OTLP request
and turning its spans into validated rows (``ingest.otlp.decode_and_convert``), in protobuf and
in the OTLP JSON encoding, beside ``decode.parse`` of the same events as a
``/1/events/`` body. No database: the write path after it is the one ingest shares.

Requests of 512 HTTP server spans (the OpenTelemetry SDKs' default export batch),
each with the attributes the ASGI instrumentation records in the current semantic
conventions, a route and a consumer, and one ``data`` attribute from the resource; the median of ``--rounds`` timed calls of each.

    .venv/bin/python bench/otlp_decode.py [--spans 512] [--rounds 50]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import orjson
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from apinalytics.ingest import decode, otlp
from apinalytics.settings import Settings
from common import median


def kv(key: str, value: str | int) -> KeyValue:
    v = AnyValue(int_value=value) if isinstance(value, int) else AnyValue(string_value=value)
    return KeyValue(key=key, value=v)


def make_request(n: int, now: float) -> ExportTraceServiceRequest:
    start = int((now - 60) * 1e9)
    spans = [
        Span(
            trace_id=bytes(16),
            span_id=bytes(8),
            name="GET /orders/{id}",
            kind=Span.SpanKind.SPAN_KIND_SERVER,
            start_time_unix_nano=start + i * 1000,
            end_time_unix_nano=start + i * 1000 + 1_500_000,
            attributes=[
                kv("http.request.method", "GET"),
                kv("url.path", f"/orders/{i}"),
                kv("url.query", "expand=items"),
                kv("http.route", "/orders/{id}"),
                kv("http.response.status_code", 200),
                kv("enduser.id", f"consumer-{i % 50}"),
                # What the ASGI instrumentation records besides (not read).
                kv("url.scheme", "https"),
                kv("server.address", "api.example"),
                kv("server.port", 443),
                kv("network.protocol.version", "1.1"),
                kv("client.address", "203.0.113.7"),
                kv("client.port", 50000 + i),
                kv("user_agent.original", "python-requests/2.34.2"),
            ],
        )
        for i in range(n)
    ]
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource={"attributes": [kv("service.name", "shop")]},
                scope_spans=[ScopeSpans(spans=spans)],
            )
        ]
    )


def timed(fn: Callable[[], object], rounds: int) -> float:
    fn()  # warm
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spans", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=50)
    args = ap.parse_args()
    settings = Settings(database_url="unused", otlp_data_attributes=["service.name"])
    now = time.time()
    req = make_request(args.spans, now)
    pb = req.SerializeToString()
    js = json_format.MessageToJson(req, indent=None).encode()
    events = orjson.dumps(
        [
            {
                "timestamp": now - 60,
                "consumer_id": f"consumer-{i % 50}",
                "method": "GET",
                "url": f"/orders/{i}?expand=items",
                "function": "/orders/{id}",
                "response_us": 1500,
                "status_code": 200,
                "data": {"service.name": "shop"},
            }
            for i in range(args.spans)
        ]
    )
    print(f"{args.spans} spans per request, median of {args.rounds}\n")
    print("| body | bytes | ms per request | spans/s |")
    print("|---|---:|---:|---:|")
    for label, body, fn in [
        (
            "OTLP protobuf",
            pb,
            lambda: otlp.decode_and_convert(pb, otlp.Encoding.PROTOBUF, 1, now, settings),
        ),
        (
            "OTLP JSON",
            js,
            lambda: otlp.decode_and_convert(js, otlp.Encoding.JSON, 1, now, settings),
        ),
        ("/1/events/ JSON (decode.parse)", events, lambda: decode.parse(events, 1, now, settings)),
    ]:
        s = timed(fn, args.rounds)
        print(f"| {label} | {len(body):,} | {s * 1000:.2f} | {args.spans / s:,.0f} |")


if __name__ == "__main__":
    main()
