"""OTLP requests built with opentelemetry-proto's classes, for the contract tests."""

from __future__ import annotations

import gzip
import time
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from apinalytics.apps import NewApp

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
SERVER = Span.SpanKind.SPAN_KIND_SERVER

Attr = str | int | float | bool | list[str]


def now_ns(ago_s: float = 60) -> int:
    return int((time.time() - ago_s) * 1e9)


def value(v: Attr) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, list):
        return AnyValue(array_value=ArrayValue(values=[AnyValue(string_value=s) for s in v]))
    return AnyValue(string_value=v)


def attributes(attrs: dict[str, Attr]) -> list[KeyValue]:
    return [KeyValue(key=k, value=value(v)) for k, v in attrs.items()]


def span(
    attrs: dict[str, Attr],
    *,
    name: str = "GET /orders/{id}",
    kind: int = SERVER,
    start_ns: int | None = None,
    duration_ns: int = 1_500_000,
    error: bool = False,
) -> Span:
    start = now_ns() if start_ns is None else start_ns
    s = Span(
        trace_id=bytes(range(16)),
        span_id=bytes(range(8)),
        name=name,
        kind=kind,  # type: ignore[arg-type]
        start_time_unix_nano=start,
        end_time_unix_nano=start + duration_ns,
        attributes=attributes(attrs),
    )
    if error:
        s.status.code = Status.StatusCode.STATUS_CODE_ERROR
    return s


# A request to an HTTP server, in the current semantic conventions.
CURRENT: dict[str, Attr] = {
    "http.request.method": "GET",
    "url.path": "/orders/7",
    "url.query": "expand=items",
    "url.scheme": "https",
    "http.route": "/orders/{id}",
    "http.response.status_code": 200,
    "enduser.id": "alice",
}

# The same in the older conventions.
OLDER: dict[str, Attr] = {
    "http.method": "GET",
    "http.target": "/orders/7?expand=items",
    "http.scheme": "https",
    "http.route": "/orders/{id}",
    "http.status_code": 200,
    "enduser.id": "alice",
}


def request(*spans: Span, resource: dict[str, Attr] | None = None) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource={"attributes": attributes(resource or {"service.name": "shop"})},
                scope_spans=[ScopeSpans(spans=list(spans))],
            )
        ]
    )


def encode(req: ExportTraceServiceRequest, content_type: str, **json_options: Any) -> bytes:
    if content_type == PROTOBUF:
        return req.SerializeToString()
    return json_format.MessageToJson(req, indent=None, **json_options).encode()


def headers(app: NewApp, content_type: str, *, gzipped: bool = False) -> dict[str, str]:
    assert app.write_key
    h = {"X-Auth-User": app.app_id, "X-Auth-Key": app.write_key, "Content-Type": content_type}
    if gzipped:
        h["Content-Encoding"] = "gzip"
    return h


def body(req: ExportTraceServiceRequest, content_type: str, *, gzipped: bool = False) -> bytes:
    raw = encode(req, content_type)
    return gzip.compress(raw) if gzipped else raw


def response(raw: bytes, content_type: str) -> ExportTraceServiceResponse:
    answer = ExportTraceServiceResponse()
    if content_type == PROTOBUF:
        answer.ParseFromString(raw)
    else:
        json_format.Parse(raw, answer)
    return answer
