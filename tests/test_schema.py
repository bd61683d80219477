"""The hand-written parts of the ingest path agree with the declared event schema.

``ingest/model.py`` (the pydantic TypedDict) and decode's fast path (``decode.Row``,
the tuple ``parse`` builds) are written out for speed; ``schema.EVENT`` is what
everything else derives from. A field added to one and not the other fails here.
"""

from __future__ import annotations

import typing

import orjson

from apinalytics import export, measures, schema
from apinalytics.ingest import decode
from apinalytics.ingest.model import EventIn
from apinalytics.settings import Settings

NOW = 1_800_000_000.0


def test_the_ingest_model_has_the_schemas_fields_in_order() -> None:
    assert tuple(EventIn.__annotations__) == tuple(f.api_name for f in schema.API_FIELDS)


def test_the_export_writes_the_schemas_fields_in_order() -> None:
    # An NDJSON export, wrapped in a JSON array, can be sent back to ingest.
    assert tuple(EventIn.__annotations__) == export.FIELDS


def test_a_decoded_row_holds_each_field_in_its_schema_column() -> None:
    assert len(typing.get_args(decode.Row)) == len(schema.COLUMNS)
    assert decode.COLUMNS == schema.COLUMNS
    event = {
        "timestamp": NOW + 0.25,
        "consumer_id": "c-1",
        "method": "get",
        "url": "/u",
        "function": "f",
        "response_us": 1234,
        "status_code": 404,
        "data": {"plan": "pro"},
    }
    settings = Settings(database_url="postgresql://unused", log_json=True)
    (row,) = decode.parse(orjson.dumps([event]), 7, NOW, settings)
    stored = dict(zip(schema.COLUMNS, row, strict=True))
    expected = {
        "time": decode.timestamp_us(NOW + 0.25),
        "app_id": 7,
        "consumer_id": "c-1",
        "method": "GET",  # normalised as schema.BY_NAME["method"].normalise does
        "url": "/u",
        "function": "f",
        "response_us": 1234,
        "status_code": 404,
        "data": '{"plan":"pro"}',
    }
    assert stored == expected
    method = schema.BY_NAME["method"].normalise
    assert method is not None and method("get") == stored["method"]


def test_every_aggregation_is_declared_and_reads_declared_measures() -> None:
    assert set(measures.AGGREGATIONS) == set(measures.Kind)
    for kind, aggregate in measures.AGGREGATIONS.items():
        if aggregate.needs_raw:
            assert aggregate.raw is not None, kind
        else:
            assert aggregate.needs and set(aggregate.needs) <= set(measures.BY_COLUMN), kind
        # A derived measure names a dimension the rollups may hold.
        assert aggregate.fields <= set(schema.DIMENSIONS), kind


def test_a_derived_measure_is_counted_from_its_dimension_on_every_path() -> None:
    rate = measures.AGGREGATIONS[measures.Kind.ERROR_RATE]
    assert rate.fields == {"status_code"}
    where = "status_code >= 500"
    assert rate.from_raw("response_us") == f"count(*) FILTER (WHERE {where})::float8 / count(*)"
    assert rate.from_rollup == (
        f"coalesce(sum(calls) FILTER (WHERE {where}), 0)::float8 / sum(calls)"
    )
    assert rate.from_parts == "sum(server_errors)::float8 / sum(calls)"


def test_the_mean_is_the_same_quotient_on_every_path() -> None:
    mean = measures.AGGREGATIONS[measures.Kind.MEAN]
    assert mean.from_raw("response_us") == "sum(response_us)::float8 / count(*)"
    assert mean.from_parts == "sum(sum_us)::float8 / sum(calls)"
    assert mean.from_row == "sum_us::float8 / calls"
