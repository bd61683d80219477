"""OpenAPI 3.1 description of the public API, served at ``GET /openapi.json``.

Generated, not written: schemas come from the declarations the service validates
with (the event of ``ingest/model.py``, the fields, granularities and aggregations of
``query/model.py``, the error shape of ``errors.py``, the limits of ``Settings``), and
the paths from ``OPERATIONS`` below, of which the served document keeps those the
application's route table has. tests/openapi checks that the two agree both ways
(every public route is described, every description is routed) and fuzzes the
service with the result.

Not described, on purpose: the HTML pages, login and the dashboard's files
(``NOT_API`` lists them), ``HEAD`` (aiohttp answers it for every ``GET``), the
aliases a route also answers at (without the trailing slash, ``/1/event/``), and the
diagnostic ``X-Apinalytics-Planner`` header.

Over 300 lines: it is one document, each operation beside the schemas it names, and
read as a whole against the route table; split, the halves would only import each other.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import orjson
from aiohttp import web
from pydantic import BaseModel, Field, TypeAdapter
from pydantic.json_schema import models_json_schema

# pydantic needs typing_extensions' TypedDict before Python 3.12.
from typing_extensions import TypedDict

from . import __version__
from .errors import ErrorBody
from .ingest.model import REQUIRED, EventIn
from .keys import SETTINGS
from .measures import Kind
from .query.model import DATA_PREFIX, FIELDS, GROUP_FIELDS, NAMED_GRANULARITIES
from .settings import Settings

JSON = "application/json"
NDJSON = "application/x-ndjson"
CSV = "text/csv"
PROTOBUF = "application/x-protobuf"
REF = "#/components/schemas/{model}"

# Routes that are not the API: pages for people, login, the dashboard's files.
# (Paths as ``canonical`` gives them; a directory of files is its prefix.)
NOT_API = (
    "/",
    "/login",
    "/login/callback",
    "/logout",
    "/apps",
    "/apps/{app_id}",
    "/apps/{app_id}/keys",
    "/apps/{app_id}/keys/{kind}",
    "/apps/{app_id}/delete",
    "/static",
    "/dashboard",
    # The 2014 service's keys page, now a redirect to /apps.
    "/u",
)
# Paths a route also answers at, and the documented path each stands for.
ALIASES = {"/1/event": "/1/events"}


def canonical(path: str) -> str:
    """The documented path a routed path stands for: ``/1/event/{start}/{end}`` is
    ``/1/events/{start}/{end}/`` (the API's paths end with a slash), ``/healthz/`` is
    ``/healthz`` (the others do not)."""
    for alias, documented in ALIASES.items():
        if path == alias or path.startswith(alias + "/"):
            path = documented + path[len(alias) :]
    if path.startswith("/1/"):
        return path if path.endswith("/") else path + "/"
    return path.rstrip("/") or "/"


# -- Schemas of bodies the service answers with (what the handlers render). --


class Accepted(TypedDict):
    accepted: int


class TimeseriesAnswer(BaseModel):
    """``groups`` maps each group (the Application ID when not grouped) to its points
    ``[bucket start in UNIX seconds, value]`` in time order; ``granularity`` is the
    bucket width in milliseconds (the whole range when none was asked)."""

    # [int, number or null]; an array of two rather than a tuple (prefixItems), which
    # some OpenAPI tools still read as OpenAPI 3.0 did.
    groups: dict[str, list[Annotated[list[float | None], Field(min_length=2, max_length=2)]]]
    start: int
    end: int
    granularity: int


class Status(TypedDict):
    status: str


# -- Query parameters, from query/model.py's declarations. --

_ANY_FIELD = "|".join(FIELDS) + "|" + DATA_PREFIX.replace(".", r"\.") + ".+"
_AGGREGATIONS = "|".join(k.value for k in Kind if k not in (Kind.PERCENTILE, Kind.APDEX))
_ANY_GROUP = "|".join(GROUP_FIELDS) + "|" + DATA_PREFIX.replace(".", r"\.") + ".+"


def _include() -> Any:
    return Field(
        [],
        description=(
            "field:value filters, repeatable: values of one field are OR-ed, fields AND-ed."
        ),
        json_schema_extra={"items": {"type": "string", "pattern": rf"^(|({_ANY_FIELD}):.*)$"}},
    )


def _caseless(*words: str) -> str:
    """A pattern of ``words`` (or empty) in any case."""
    return "^(|" + "|".join("".join(f"[{c.upper()}{c}]" for c in w) for w in words) + ")$"


def _consistency() -> Any:
    return Field(
        "",
        description=(
            "strong: read from the primary, every acknowledged write seen. bounded (the "
            "default): from the read replica while it lags at most read_max_lag_s "
            "(docs/replicas.md). The X-Apinalytics-Consistency header does the same."
        ),
        pattern=_caseless("bounded", "strong"),
    )


class TimeseriesParams(BaseModel):
    """An empty value means the default; values are checked further by the service."""

    granularity: str = Field(
        "",
        description=(
            "Bucket width: whole seconds or one of "
            f"{', '.join(NAMED_GRANULARITIES)}; weeks start on Monday. Empty: one bucket "
            "for the whole range."
        ),
        pattern=rf"^(|{'|'.join(NAMED_GRANULARITIES)}|[0-9]{{1,12}})$",
    )
    aggregation: str = Field(
        "",
        description=(
            "count (the default), mean, min, max, sum, error_rate (the share of calls "
            "with status 500-599), percentile_X (X above 0 and below 100, at most one "
            "decimal: percentile_99.9), or apdex_T (T in milliseconds, 1 to 86400000)."
        ),
        pattern=(
            rf"^(|{_AGGREGATIONS}|percentile_(0|[1-9][0-9]?)(\.[0-9])?"
            r"|apdex_[1-9][0-9]{0,7})$"
        ),
    )
    group: str = Field(
        "",
        description=f"Group by a field: {', '.join(GROUP_FIELDS)}, or data.<key>.",
        pattern=rf"^(|{_ANY_GROUP})$",
    )
    precision: Literal["", "exact", "approximate"] = Field(
        "",
        description=(
            "exact (the default), or approximate: percentiles and Apdex read from the "
            "rollups' latency histograms, within the relative error the answer's "
            "precision.relative_error states."
        ),
    )
    include: list[str] = _include()
    value: Literal["", "response_us"] = Field("", description="The measure: response_us.")
    consistency: str = _consistency()


class ExportParams(BaseModel):
    include: list[str] = _include()
    format: str = Field(
        "",
        description="ndjson (the default) or csv; Accept: text/csv also asks for CSV.",
        # Case does not matter.
        pattern=_caseless("ndjson", "csv"),
    )
    consistency: str = _consistency()


# -- Operations. --


@dataclass(frozen=True)
class Operation:
    method: Literal["get", "post"]
    path: str
    summary: str
    tag: str
    responses: Mapping[str, Mapping[str, Any]]
    description: str = ""
    security: str | None = None  # "write" or "read"
    query: type[BaseModel] | None = None
    path_params: tuple[str, ...] = ()
    headers: tuple[Mapping[str, Any], ...] = ()
    body: Mapping[str, Any] | None = None
    errors: tuple[int, ...] = field(default=())
    # The body of its errors, where it is not the service's error shape alone.
    error_content: Mapping[str, Any] | None = None


def _json(schema: Mapping[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}, **extra}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


_RANGE = ("start", "end")
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "description": (
        "Sending the same key again within a day with the same body (compared after "
        "gunzip) stores the batch at most once and answers as the first time did; the "
        "same key with another body is refused (422 idempotency_key_reused)."
    ),
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}
_CONTENT_ENCODING = {
    "name": "Content-Encoding",
    "in": "header",
    "description": "gzip, or absent (identity).",
    "schema": {
        "type": "string",
        "pattern": r"^\s*([Gg][Zz][Ii][Pp]|[Ii][Dd][Ee][Nn][Tt][Ii][Tt][Yy])\s*$",
    },
}
_CONSISTENCY = {
    "name": "X-Apinalytics-Consistency",
    "in": "header",
    "description": "strong or bounded, as the consistency parameter (either may ask).",
    "schema": {
        "type": "string",
        "pattern": r"^\s*" + _caseless("bounded", "strong")[1:-1] + r"\s*$",
    },
}
_READ_FROM = {
    "X-Apinalytics-Read-From": {
        "description": "The server that answered: replica or primary (docs/replicas.md).",
        "schema": {"type": "string", "enum": ["replica", "primary"]},
    }
}
_SOURCES = {
    "X-Apinalytics-Sources": {
        "description": "The relations the answer was read from (raw, 1m, 1h).",
        "schema": {"type": "string"},
    },
    **_READ_FROM,
}

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "post",
        "/1/events/",
        "Send a batch of events",
        "ingest",
        description=(
            "A JSON array of events, stored all or nothing. Beyond the schema: timestamps "
            "within the accepted window, no NUL characters, an HTTP method token."
        ),
        security="write",
        headers=(_IDEMPOTENCY_KEY, _CONTENT_ENCODING),
        body={
            "required": True,
            "content": {JSON: {"schema": {"type": "array", "items": _ref("Event")}}},
        },
        responses={"200": _json(_ref("Accepted"), "Stored (or an empty batch)")},
        errors=(400, 401, 403, 413, 415, 422, 429, 503),
    ),
    Operation(
        "post",
        "/v1/traces",
        "Send OpenTelemetry traces (OTLP/HTTP)",
        "ingest",
        description=(
            "An OTLP ExportTraceServiceRequest, binary protobuf or its JSON form (OTLP/HTTP); "
            "its spans are stored as events."
        ),
        security="write",
        headers=(_IDEMPOTENCY_KEY, _CONTENT_ENCODING),
        body={
            "required": True,
            "content": {
                PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
                JSON: {
                    "schema": {
                        "type": "object",
                        "properties": {"resourceSpans": {"type": "array"}},
                    }
                },
            },
        },
        responses={
            "200": {
                "description": "Accepted",
                "content": {
                    PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
                    JSON: {"schema": {"type": "object"}},
                },
            }
        },
        errors=(400, 401, 403, 413, 415, 422, 429, 503),
        # OTLP/HTTP answers errors with a google.rpc.Status in the request's encoding;
        # what is refused before the body is read (415, 429 and 503 of the service's
        # bounds) keeps the service's error shape.
        error_content={
            PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
            JSON: {"schema": {"anyOf": [_ref("RpcStatus"), _ref("Error")]}},
        },
    ),
    Operation(
        "get",
        "/1/timeseries/{start}/{end}/",
        "Query a time series",
        "query",
        description="Events of [start, end) (UNIX seconds), aggregated per bucket and group.",
        security="read",
        path_params=_RANGE,
        query=TimeseriesParams,
        headers=(_CONSISTENCY,),
        responses={"200": _json(_ref("TimeseriesAnswer"), "The series", headers=_SOURCES)},
        errors=(400, 401, 403, 404, 410, 429, 503),
    ),
    Operation(
        "get",
        "/1/events/{start}/{end}/",
        "Export raw events",
        "query",
        description=(
            "The events of [start, end) in time order, streamed, with the fields ingest "
            "takes: NDJSON, or CSV with a header line."
        ),
        security="read",
        path_params=_RANGE,
        query=ExportParams,
        headers=(_CONSISTENCY,),
        responses={
            "200": {
                "description": "The events",
                "headers": _READ_FROM,
                "content": {
                    NDJSON: {"schema": {"type": "string"}},
                    CSV: {"schema": {"type": "string"}},
                },
            }
        },
        errors=(400, 401, 403, 404, 410, 503),
    ),
    Operation(
        "get",
        "/healthz",
        "Liveness",
        "operations",
        responses={"200": _json(_ref("Status"), "The process answers")},
    ),
    Operation(
        "get",
        "/readyz",
        "Readiness",
        "operations",
        description="200 when the database answers and every migration is applied.",
        responses={"200": _json(_ref("Status"), "Ready")},
        errors=(503,),
    ),
    Operation(
        "get",
        "/metrics",
        "Prometheus metrics",
        "operations",
        responses={
            "200": {
                "description": "The text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    ),
    Operation(
        "get",
        "/openapi.json",
        "This description",
        "operations",
        responses={"200": _json({"type": "object"}, "OpenAPI 3.1")},
    ),
)

_SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "write": [{"appId": [], "writeKey": []}],
    "read": [{"appId": [], "readKey": []}],
}


def _schemas(settings: Settings) -> dict[str, Any]:
    """Every component schema, with the limits ``settings`` sets on events."""
    schemas: dict[str, Any] = {}
    for name, tp in (
        ("Event", EventIn),
        ("Accepted", Accepted),
        ("Status", Status),
        ("Error", ErrorBody),
    ):
        schema = TypeAdapter(tp).json_schema(ref_template=REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
    schemas["RpcStatus"] = {
        "description": "google.rpc.Status in its JSON form (OTLP/HTTP errors).",
        "type": "object",
        "properties": {
            "code": {"type": "integer"},
            "message": {"type": "string"},
            "details": {"type": "array", "items": {"type": "object"}},
        },
    }
    _, top = models_json_schema([(TimeseriesAnswer, "serialization")], ref_template=REF)
    schemas.update(top.get("$defs", {}))
    # The model keeps unknown fields and takes data values as they come, so that a
    # hopeless batch costs little (ingest/model.py); decode refuses them: say so here.
    schemas["Event"]["required"] = list(REQUIRED)
    schemas["Event"]["additionalProperties"] = False
    event = schemas["Event"]["properties"]
    for name in ("consumer_id", "function"):
        event[name]["maxLength"] = settings.max_string_length
    event["method"]["maxLength"] = 32
    event["url"]["maxLength"] = settings.max_url_length
    data = event["data"]["anyOf"][0]
    data["maxProperties"] = settings.max_data_keys
    data["propertyNames"] = {"minLength": 1, "maxLength": settings.max_string_length}
    data["additionalProperties"] = {"type": "string", "maxLength": settings.max_data_value_length}
    event["timestamp"]["description"] = (
        f"UNIX seconds, accepted from {settings.max_event_age_s} s ago to "
        f"{settings.max_event_future_s} s ahead; kept to the microsecond."
    )
    return schemas


def _parameters(op: Operation) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "description": "UNIX seconds" + (", after start" if name == "end" else ""),
            # What parse_time takes: whole seconds up to 9999-12-31T23:59:59Z.
            "schema": {"type": "integer", "minimum": 0, "maximum": 253_402_300_799},
        }
        for name in op.path_params
    ]
    if op.query is not None:
        schema = op.query.model_json_schema(ref_template=REF)
        for name, prop in schema["properties"].items():
            prop.pop("title", None)
            prop.pop("default", None)
            description = prop.pop("description", "")
            params.append(
                {
                    "name": name,
                    "in": "query",
                    "required": False,
                    "description": description,
                    "schema": prop,
                    **({"explode": True} if prop.get("type") == "array" else {}),
                }
            )
    params.extend(dict(h) for h in op.headers)
    return params


def _operation(op: Operation) -> dict[str, Any]:
    responses: dict[str, Any] = {code: dict(r) for code, r in op.responses.items()}
    content = op.error_content or {JSON: {"schema": _ref("Error")}}
    for status in op.errors:
        responses[str(status)] = {
            "description": "An error; the message says what to change",
            "content": content,
        }
    # Any other status (404 for an unreadable path, 405, 500) has the same error shape.
    responses["default"] = {"description": "An error", "content": content}
    out: dict[str, Any] = {
        "summary": op.summary,
        "tags": [op.tag],
        "operationId": op.method + "_" + re.sub(r"[^A-Za-z0-9]+", "_", op.path).strip("_"),
        "responses": responses,
    }
    if op.description:
        out["description"] = op.description
    params = _parameters(op)
    if params:
        out["parameters"] = params
    if op.body is not None:
        out["requestBody"] = dict(op.body)
    if op.security is not None:
        out["security"] = _SECURITY[op.security]
    return out


def document(settings: Settings, routed: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The OpenAPI document of the operations among ``routed`` ((METHOD, path) pairs)."""
    have = {(m.lower(), p) for m, p in routed}
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        if (op.method, op.path) in have:
            paths.setdefault(op.path, {})[op.method] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "APInalytics",
            "version": __version__,
            "description": "Analytics for APIs: send events, query time series, export.",
        },
        "paths": paths,
        "components": {
            "schemas": _schemas(settings),
            "securitySchemes": {
                "appId": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Auth-User",
                    "description": "The Application ID.",
                },
                "writeKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Auth-Key",
                    "description": "The application's write key.",
                },
                "readKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Auth-Key",
                    "description": (
                        "The application's read key (the dashboard's logged-in session "
                        "may read its owner's apps without one)."
                    ),
                },
            },
        },
    }


def routes(app: web.Application) -> frozenset[tuple[str, str]]:
    """(METHOD, path) of every route of ``app``, HEAD left out."""
    out = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter") or info.get("prefix")
        if path and route.method != "HEAD":
            out.add((route.method, str(path)))
    return frozenset(out)


# The settings the document depends on.
LIMITS = (
    "max_string_length",
    "max_url_length",
    "max_data_keys",
    "max_data_value_length",
    "max_event_age_s",
    "max_event_future_s",
)


@functools.cache
def _rendered(limits: tuple[tuple[str, Any], ...], routed: frozenset[tuple[str, str]]) -> bytes:
    return orjson.dumps(document(Settings.model_construct(**dict(limits)), routed))


async def view(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    limits = tuple((name, getattr(settings, name)) for name in LIMITS)
    return web.Response(body=_rendered(limits, routes(request.app)), content_type=JSON)
