"""From an OTLP ``ExportTraceServiceRequest`` to validated rows (docs/otlp.md).

Which spans are events (kind SERVER, with an HTTP method attribute), how a span's
attributes, in the current or the older semantic conventions, make an event's fields,
and the validation of ``/1/events/`` (``decode.parse``) over the result: a span whose
event fails it is rejected on its own, named by its place in the request.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass, field
from typing import Any

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from ..settings import Settings
from . import decode
from .decode import Row

# The rejected spans named in partial_success.error_message (all are counted), and
# the characters of a span's name shown there.
MAX_NAMED = 10
MAX_NAME_SHOWN = 100


@dataclass
class Converted:
    """The rows of a request's spans, and what became of the others."""

    rows: list[Row] = field(default_factory=list)
    # Which span each row is, to name those the writer refuses.
    spans: list[Place] = field(default_factory=list)
    # One line per rejected span: which span and why.
    rejected: list[str] = field(default_factory=list)
    ignored: Counter[str] = field(default_factory=Counter)

    def error_message(self) -> str:
        n = len(self.rejected)
        named = "; ".join(self.rejected[:MAX_NAMED])
        more = f"; and {n - MAX_NAMED} more" if n > MAX_NAMED else ""
        return f"{n} span{'s' if n > 1 else ''} rejected, the others stored: {named}{more}."

    def reject_past_horizon(self, exc: decode.BatchRejected) -> None:
        """Reject the rows that ``exc``, the writer's refusal, names, and every row at
        least as old as the newest of them (past the horizon too: a refusal names at
        most ``decode.MAX_DETAILS``); re-raise a refusal of another kind."""
        details = exc.details or []
        if not details or any(d.get("field") != "timestamp" for d in details):
            raise exc
        newest = max(self.rows[d["index"]][0] for d in details)
        why = details[0]["message"]
        rows, spans = self.rows, self.spans
        self.rows, self.spans = [], []
        for row, span in zip(rows, spans, strict=True):
            if row[0] <= newest:
                self.rejected.append(f"{_label(span)}: timestamp {why}")
            else:
                self.rows.append(row)
                self.spans.append(span)


def convert(
    request: ExportTraceServiceRequest, app: int, now: float, settings: Settings
) -> Converted:
    """The spans of a request body as rows, validated as ``/1/events/`` validates events;
    a 400 for a body that is not an ExportTraceServiceRequest in ``encoding``, a 413 for
    more events than a batch may hold."""
    out = Converted()
    events: list[dict[str, Any]] = []
    starts: list[int] = []
    places: list[Place] = []
    consumer_key = settings.otlp_consumer_attribute
    data_keys = settings.otlp_data_attributes
    wanted = SPAN_ATTRIBUTES | {consumer_key, *data_keys}
    for r, resource_spans in enumerate(request.resource_spans):
        resource = _attributes(resource_spans.resource.attributes, wanted)
        for s, scope_spans in enumerate(resource_spans.scope_spans):
            for k, span in enumerate(scope_spans.spans):
                if span.kind != Span.SpanKind.SPAN_KIND_SERVER:
                    out.ignored["not_server"] += 1
                    continue
                attrs = _attributes(span.attributes, wanted)
                method = _method(attrs)
                if method is None:
                    out.ignored["no_http_method"] += 1
                    continue
                ev = _event(span, method, attrs, resource, consumer_key, data_keys)
                if isinstance(ev, str):
                    out.rejected.append(f"{_label((r, s, k, span.name))}: {ev}")
                    continue
                events.append(ev)
                starts.append(span.start_time_unix_nano)
                places.append((r, s, k, span.name))
    if len(events) > settings.max_batch_events:
        raise decode.BatchTooLarge(
            f"The request holds {len(events)} HTTP server spans; the limit is "
            f"{settings.max_batch_events} per request.",
            events=len(events),
        )
    try:
        rows = decode.parse(orjson.dumps(events), app, now, settings)
        kept = list(range(len(events)))
    except decode.BatchRejected:
        # Rare: some span is invalid. Each is validated alone to tell which.
        rows, kept = [], []
        for i, ev in enumerate(events):
            try:
                rows += decode.parse(orjson.dumps([ev]), app, now, settings)
                kept.append(i)
            except decode.BatchRejected as exc:
                out.rejected.append(f"{_label(places[i])}: {_problems(exc)}")
    for row, i in zip(rows, kept, strict=True):
        # The exact microsecond of the span's start (the float of the event is exact
        # only to a quarter of one).
        out.rows.append((_nearest_us(starts[i]), *row[1:]))
        out.spans.append(places[i])
    return out


# Where a span is in its request (resource, scope, span index) and its name.
Place = tuple[int, int, int, str]


def _label(place: Place) -> str:
    """A span as partial_success names it: its place in the request and its name."""
    r, s, k, name = place
    if len(name) > MAX_NAME_SHOWN:
        name = name[:MAX_NAME_SHOWN] + "…"
    return f"resourceSpans[{r}].scopeSpans[{s}].spans[{k}] ({name!r})"


# The attributes an event is made of (besides the configured consumer and data ones).
SPAN_ATTRIBUTES = frozenset(
    {
        "http.request.method",
        "http.request.method_original",
        "http.method",
        "url.full",
        "url.path",
        "url.query",
        "http.url",
        "http.target",
        "http.route",
        "http.response.status_code",
        "http.status_code",
    }
)


def _attributes(kvs: Iterable[KeyValue], wanted: Set[str]) -> dict[str, AnyValue]:
    """The attributes named in ``wanted`` (the last of a name given twice). Only those:
    each value read costs a wrapper object, and spans carry many others (user agent,
    addresses, ports, headers)."""
    return {kv.key: kv.value for kv in kvs if kv.key in wanted}


def _scalar(value: AnyValue) -> str | int | float | bool | None:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "bool_value":
        return value.bool_value
    return None


def _text(value: AnyValue) -> str | None:
    """An attribute's value as text: a scalar as JSON writes it, an array of scalars (as
    semantic conventions record request headers) joined with ", " as HTTP joins header
    values; None for bytes, maps and nested arrays."""
    if value.WhichOneof("value") == "array_value":
        items = [_scalar(v) for v in value.array_value.values]
        if any(v is None for v in items):
            return None
        return ", ".join(_scalar_text(v) for v in items if v is not None)
    scalar = _scalar(value)
    return None if scalar is None else _scalar_text(scalar)


def _scalar_text(value: str | int | float | bool) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _attribute_text(
    name: str, attrs: dict[str, AnyValue], resource: dict[str, AnyValue]
) -> str | None:
    """The span's attribute ``name`` as text, or else the resource's."""
    value = attrs[name] if name in attrs else resource.get(name)
    return None if value is None else _text(value)


def _string(attrs: dict[str, AnyValue], *names: str) -> str | None:
    """The first of ``names`` that is a string attribute."""
    for name in names:
        value = attrs.get(name)
        if value is not None and value.WhichOneof("value") == "string_value":
            return value.string_value
    return None


def _method(attrs: dict[str, AnyValue]) -> str | None:
    method = _string(attrs, "http.request.method", "http.method")
    if method == "_OTHER":
        # Current conventions name a method they do not know _OTHER, and keep it here.
        return _string(attrs, "http.request.method_original") or method
    return method


def _url(attrs: dict[str, AnyValue]) -> str:
    full = _string(attrs, "url.full")
    if full is not None:
        return full
    path = _string(attrs, "url.path")
    if path is not None:
        query = _string(attrs, "url.query")
        return f"{path}?{query}" if query else path
    return _string(attrs, "http.url", "http.target") or ""


def _status(attrs: dict[str, AnyValue], span: Span) -> int | str:
    """The response's status code, or why there is none."""
    for name in ("http.response.status_code", "http.status_code"):
        value = attrs.get(name)
        if value is None:
            continue
        scalar = _scalar(value)
        if isinstance(scalar, int) and not isinstance(scalar, bool):
            return scalar
        if isinstance(scalar, str) and scalar.isascii() and scalar.isdigit() and len(scalar) <= 3:
            return int(scalar)
        return f"{name} is not an integer"
    if span.status.code == Status.StatusCode.STATUS_CODE_ERROR:
        # The server failed before it answered (an exception the instrumentation saw
        # leave the handler): its server answers 500.
        return 500
    return "has no http.response.status_code (nor http.status_code) attribute"


def _event(
    span: Span,
    method: str,
    attrs: dict[str, AnyValue],
    resource: dict[str, AnyValue],
    consumer_key: str,
    data_keys: Sequence[str],
) -> dict[str, Any] | str:
    """The event of an HTTP server span, or why the span cannot be one."""
    status = _status(attrs, span)
    if isinstance(status, str):
        return status
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    if end < start:
        return "ends before it starts (endTimeUnixNano < startTimeUnixNano)"
    data = {}
    for key in data_keys:
        text = _attribute_text(key, attrs, resource)
        if text is not None:
            data[key] = text
    return {
        "timestamp": start / 1e9,
        "consumer_id": _attribute_text(consumer_key, attrs, resource) or "",
        "method": method,
        "url": _url(attrs),
        "function": _string(attrs, "http.route") or span.name,
        "response_us": _nearest_us(end - start),
        "status_code": status,
        "data": data or None,
    }


def _nearest_us(ns: int) -> int:
    """Nanoseconds as the nearest microsecond, ties to even (exactly, in integers)."""
    us, rest = divmod(ns, 1000)
    return us + (rest > 500 or (rest == 500 and us % 2 == 1))


def _problems(exc: decode.BatchRejected) -> str:
    return ", ".join(
        (f"event field {d['field']} " if d.get("field") else "") + d["message"]
        for d in exc.details or []
    )
