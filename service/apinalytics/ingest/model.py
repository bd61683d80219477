"""The event as clients send it (SPEC "Sending events"), validated by pydantic.

Types are strict: a string where a number belongs, a float response time or a
boolean timestamp are errors rather than guesses. Limits that depend on settings
(string lengths, the time window, NUL characters) are checked by ``decode`` in the
same pass that builds the rows, so the model stays a plain declaration.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    timestamp: float
    consumer_id: str
    method: str = Field(min_length=1)
    url: str
    function: str
    response_us: int = Field(ge=0, le=2**63 - 1)
    status_code: int = Field(ge=100, le=599)
    data: dict[str, str] | None = None


BATCH = TypeAdapter(list[EventIn])
FIELDS = tuple(EventIn.model_fields)
