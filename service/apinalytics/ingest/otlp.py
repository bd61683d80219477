"""``POST /v1/traces``: OpenTelemetry trace export (OTLP/HTTP), one event per HTTP request.

The body is an ``ExportTraceServiceRequest``, protobuf (``application/x-protobuf``) or
the OTLP JSON mapping (``application/json``), gzip or not, decoded by the classes
opentelemetry-proto generates. Each span of kind SERVER with an HTTP method attribute
becomes one event (``otlp_spans``; the mapping is documented in docs/otlp.md); other spans
are ignored and counted. The events then take the path of ``POST /1/events/``: the
same validation (``decode.parse``), limits, Idempotency-Key and group writer, so the
events of a request are stored together, in one transaction, or not at all.

A span whose event fails validation is rejected on its own, and the answer counts it
in ``partial_success``: OTLP's way of refusing data that a retry cannot fix, without
refusing the rest (a client retries a whole request it was refused, and would send the
same bad span forever). A body that cannot be decoded is a 400.

Errors are ``google.rpc.Status`` messages in the request's encoding (the OTLP/HTTP
specification, "Failures"), our machine code carried as the reason of an ``ErrorInfo``
detail; a request whose Content-Type is neither encoding gets our JSON error.
"""

from __future__ import annotations

import logging
import time
from enum import Enum
from typing import Any

import orjson
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from .. import auth
from ..apps import KeyKind
from ..errors import ApiError, UserError
from ..keys import INGEST, LIMITS, METRICS, SETTINGS
from ..settings import Settings
from . import decode
from .handlers import idempotency_key, off_loop_if_big, outcome_counted, read_body
from .idempotency import IdempotencyKey
from .otlp_spans import Converted, convert

log = logging.getLogger(__name__)


class Encoding(Enum):
    PROTOBUF = "application/x-protobuf"
    JSON = "application/json"


CONTENT_TYPES = tuple(e.value for e in Encoding)

# google.rpc.Code for the HTTP status of an error (the OTLP clients record it, and do
# not act on it).
_GRPC_CODES = {
    400: code_pb2.INVALID_ARGUMENT,
    401: code_pb2.UNAUTHENTICATED,
    403: code_pb2.PERMISSION_DENIED,
    404: code_pb2.NOT_FOUND,
    410: code_pb2.FAILED_PRECONDITION,
    413: code_pb2.RESOURCE_EXHAUSTED,
    415: code_pb2.INVALID_ARGUMENT,
    422: code_pb2.FAILED_PRECONDITION,
    429: code_pb2.RESOURCE_EXHAUSTED,
    503: code_pb2.UNAVAILABLE,
}


async def post_traces(request: web.Request) -> web.StreamResponse:
    encoding = _encoding(request)
    try:
        with outcome_counted(request.app[METRICS]):
            return await _post_traces(request)
    except ApiError as exc:
        if encoding is None:
            raise  # rendered as our JSON error by the errors middleware
        if not isinstance(exc, UserError):
            log.warning("request failed: %s", exc.message, extra={"code": exc.code})
        return _status_response(exc, encoding)


async def _post_traces(request: web.Request) -> web.Response:
    creds = await auth.require(request, KeyKind.WRITE)
    request.app[LIMITS].ingest(creds.app_id)
    settings = request.app[SETTINGS]
    metrics = request.app[METRICS]
    idem = idempotency_key(request)
    body = await read_body(request, settings, CONTENT_TYPES)
    encoding = Encoding(request.content_type)
    try:
        batch = await off_loop_if_big(
            request, len(body), decode_and_convert, body, encoding, creds.app, time.time(), settings
        )
    except decode.BatchTooLarge as exc:
        metrics.events_rejected.labels(reason=exc.code).inc(exc.events)
        raise
    for reason, n in batch.ignored.items():
        metrics.otlp_spans_ignored.labels(reason=reason).inc(n)
    # The digest is of the body as sent (after gunzip), so the rows that a retry below
    # leaves out do not make it another request.
    claim = await off_loop_if_big(request, len(body), IdempotencyKey.of, idem, body)
    writer = request.app[INGEST]
    while True:
        try:
            result = await writer.submit(creds.app, batch.rows, claim)
            break
        except decode.BatchRejected as exc:
            # Events older than the raw events' retention horizon, which the writer
            # reads inside its transaction (it stored nothing): rejected like any
            # other span that fails validation, and the others written again.
            batch.reject_past_horizon(exc)
    if batch.rejected:
        metrics.events_rejected.labels(reason="invalid_span").inc(len(batch.rejected))
    metrics.events_accepted.inc(result.stored)
    answer = ExportTraceServiceResponse()
    if batch.rejected:
        answer.partial_success.rejected_spans = len(batch.rejected)
        answer.partial_success.error_message = batch.error_message()
    return _message_response(answer, 200, encoding)


def decode_and_convert(
    body: bytes, encoding: Encoding, app: int, now: float, settings: Settings
) -> Converted:
    """The rows of a request body's HTTP server spans (``otlp_spans.convert``); a 400 for
    a body that is not an ExportTraceServiceRequest in ``encoding``."""
    return convert(decode_request(body, encoding), app, now, settings)


def decode_request(body: bytes, encoding: Encoding) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    try:
        if encoding is Encoding.PROTOBUF:
            request.ParseFromString(body)
        else:
            document = orjson.loads(body)
            if not isinstance(document, dict):
                raise ValueError(f"the body is a JSON {type(document).__name__}, not an object")
            # OTLP/JSON: receivers ignore fields they do not know (the specification).
            json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except DecodeError as exc:
        raise UserError(
            f"The body is not an OTLP ExportTraceServiceRequest in protobuf: {exc}",
            code="invalid_body",
        ) from exc
    except (json_format.ParseError, ValueError, RecursionError) as exc:
        raise UserError(
            f"The body is not an OTLP ExportTraceServiceRequest in JSON: {exc}",
            code="invalid_body",
        ) from exc
    return request


def _encoding(request: web.Request) -> Encoding | None:
    try:
        return Encoding(request.content_type)
    except ValueError:
        return None


def _status_response(exc: ApiError, encoding: Encoding) -> web.Response:
    """An error as OTLP/HTTP answers one: a google.rpc.Status in the request's encoding."""
    status = status_pb2.Status(
        code=_GRPC_CODES.get(exc.status, code_pb2.INTERNAL), message=exc.message
    )
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason=exc.code, domain="apinalytics"))
    return _message_response(status, exc.status, encoding, exc.headers)


def _message_response(
    message: Any, status: int, encoding: Encoding, headers: dict[str, str] | None = None
) -> web.Response:
    if encoding is Encoding.PROTOBUF:
        body = message.SerializeToString()
    else:
        body = json_format.MessageToJson(message, indent=None).encode()
    return web.Response(
        body=body, status=status, content_type=encoding.value, headers=headers or {}
    )
