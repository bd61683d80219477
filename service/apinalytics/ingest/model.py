"""The event as clients send it (SPEC "Sending events"), validated by pydantic.

Types are strict: a string where a number belongs, a float response time or a
boolean timestamp are errors rather than guesses. Limits that depend on settings
(string lengths, the time window, NUL characters) are checked by ``decode`` in the
same pass that builds the rows, so the model stays a plain declaration.

A TypedDict rather than a BaseModel: validating a batch into plain dicts skips
building a model object per event, about 40 % of pydantic's time per batch
(docs/benchmarks.md), with the same rules and the same error locations.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, Field, TypeAdapter, with_config

# pydantic needs typing_extensions' TypedDict before Python 3.12.
from typing_extensions import TypedDict

# One day. Rollups and query answers sum response times in 64-bit integers: with this
# bound a sum overflows only past 10^8 events of a whole day each in one bucket of one
# group, where an unbounded one overflowed with two events (and refreshes of the
# continuous aggregates failed on them from then on).
MAX_RESPONSE_US = 86_400_000_000


# Unknown fields are kept (extra="allow"), missing ones left out (total=False), and data
# values taken whatever they are (dict[str, Any]): decode refuses each of them. pydantic
# would report every unknown field and data value as an error, and every missing field
# with a copy of the whole event: one event of a million unknown fields and no others
# cost over a gigabyte before its 400 (ingest/invalid.py).
@with_config(ConfigDict(extra="allow", strict=True))
class EventIn(TypedDict, total=False):
    # NaN and Infinity, which the JSON parser takes (1e400 becomes Infinity), are refused
    # by decode's time-window check, which no such value passes.
    timestamp: float
    consumer_id: str
    method: Annotated[str, Field(min_length=1)]
    url: str
    function: str
    response_us: Annotated[int, Field(ge=0, le=MAX_RESPONSE_US)]
    status_code: Annotated[int, Field(ge=100, le=599)]
    data: dict[str, Any] | None


# fail_fast: the first invalid event ends validation; ingest/invalid.py explains.
BATCH = TypeAdapter(Annotated[list[EventIn], Field(fail_fast=True)])
EVENT = TypeAdapter(EventIn)
FIELDS = tuple(EventIn.__annotations__)
# Every field but data must be given.
REQUIRED = tuple(f for f in FIELDS if f != "data")
