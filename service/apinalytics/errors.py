"""Domain errors carry their HTTP status and machine code; one middleware renders them.

User errors (4xx) say what the caller must change. System errors (5xx) say what is
wrong on our side and, where it helps, when to come back.
"""

from __future__ import annotations

from typing import Any, NotRequired

# pydantic (the OpenAPI document's schemas) needs typing_extensions' TypedDict before 3.12.
from typing_extensions import TypedDict


class ErrorInfo(TypedDict):
    code: str
    message: str
    details: NotRequired[list[dict[str, Any]]]


class ErrorBody(TypedDict):
    """Every error's JSON body (SPEC "Errors")."""

    error: ErrorInfo


class ApiError(Exception):
    """Base of every error the API renders as ``{"error": {...}}``."""

    status: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}
        if code is not None:
            self.code = code

    def body(self) -> ErrorBody:
        error: ErrorInfo = {"code": self.code, "message": self.message}
        if self.details:
            error["details"] = self.details
        return {"error": error}


class UserError(ApiError):
    """The request is wrong; the message says how."""

    status = 400
    code = "bad_request"


class InvalidQuery(UserError):
    """A query parameter is wrong: names the parameter and why."""

    code = "invalid_parameter"

    def __init__(self, param: str, why: str, *, code: str | None = None) -> None:
        super().__init__(f"{param}: {why}", details=[{"param": param, "message": why}], code=code)
        self.param = param
        self.why = why


class InvalidEvents(UserError):
    """Some events of a batch are invalid; details name the index and field of each."""

    code = "invalid_events"


class Unauthorized(UserError):
    status = 401
    code = "unauthorized"


class Forbidden(UserError):
    status = 403
    code = "forbidden"


class NotFound(UserError):
    status = 404
    code = "not_found"


class MethodNotAllowed(UserError):
    status = 405
    code = "method_not_allowed"


class IdempotencyKeyReused(UserError):
    """An Idempotency-Key claimed within its lifetime by a request with another body.
    The message never quotes the key (it may be a secret of the client's)."""

    status = 422
    code = "idempotency_key_reused"

    def __init__(self, ttl_s: int) -> None:
        lifetime = f"{ttl_s // 3600} h" if ttl_s % 3600 == 0 else f"{ttl_s} s"
        super().__init__(
            "This Idempotency-Key was used in the last "
            f"{lifetime} for a request with a different body; nothing was stored. A "
            "retry must resend the same body (compared after gunzip); send a new batch "
            "with a new key."
        )


class PayloadTooLarge(UserError):
    status = 413
    code = "payload_too_large"


class BodyTimeout(UserError):
    """The request's body did not arrive in time; the connection is closed."""

    status = 408
    code = "body_timeout"

    def __init__(self, timeout_s: float) -> None:
        super().__init__(
            f"The body did not arrive within {timeout_s:g} s; nothing was stored.",
            headers={"Connection": "close"},
        )


class UnsupportedMediaType(UserError):
    status = 415
    code = "unsupported_media_type"


class Gone(UserError):
    """The data asked for existed once but is past retention."""

    status = 410
    code = "past_retention"


class SystemFault(ApiError):
    """Something on our side; the caller did nothing wrong."""

    status = 500
    code = "internal_error"


class DatabaseUnavailable(SystemFault):
    """503 + Retry-After. ``stored_nothing``: the request was a write that left nothing
    behind, which the message then says (the ingest handler knows; the database layer,
    which raises it, does not)."""

    status = 503
    code = "database_unavailable"

    def __init__(self, retry_after: int = 5, *, stored_nothing: bool = False) -> None:
        self.retry_after = retry_after
        said = "; nothing was stored" if stored_nothing else ""
        super().__init__(
            f"The database is unavailable{said}. Retry later.",
            headers={"Retry-After": str(retry_after)},
        )


class CommitOutcomeUnknown(DatabaseUnavailable):
    """The connection was lost during COMMIT: the batch may or may not be stored."""

    def __init__(self, retry_after: int = 5) -> None:
        super().__init__(retry_after)
        self.message = (
            "The database connection was lost while the batch was being committed: it may "
            "or may not be stored. Resend it with the same Idempotency-Key, which stores it "
            "at most once."
        )


class NotReady(SystemFault):
    """The database answers but the schema is behind: ``apinalytics migrate`` fixes it."""

    status = 503
    code = "not_ready"

    def __init__(self, pending: list[str]) -> None:
        super().__init__(
            f"Migrations not applied yet: {', '.join(pending)}; run `apinalytics migrate`.",
            details=[{"pending_migration": name} for name in pending],
        )


class QueryTimeout(SystemFault):
    status = 503
    code = "query_timeout"

    def __init__(self, timeout_s: float) -> None:
        super().__init__(
            f"The query ran longer than the {timeout_s:g} s statement timeout and was "
            "cancelled; ask for a shorter range or a coarser granularity."
        )


class Overloaded(SystemFault):
    """Every connection of the pool is busy (the database itself answers): come back
    in a moment. Said within ``busy_wait_s``, not after the acquire timeout."""

    status = 503
    code = "overloaded"

    def __init__(self, what: str, retry_after: int = 1) -> None:
        super().__init__(
            f"The service is busy: {what}. Retry in {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )


class RateLimited(UserError):
    """This application is over its share (docs/limits.md): 429 with Retry-After and
    the RateLimit-* fields of draft-ietf-httpapi-ratelimit-headers."""

    status = 429
    code = "rate_limited"

    def __init__(self, what: str, limit: int, retry_after: int = 1) -> None:
        super().__init__(
            f"This application is over its limit: {what}. Retry in {retry_after} s.",
            headers={
                "Retry-After": str(retry_after),
                "RateLimit-Limit": str(limit),
                "RateLimit-Remaining": "0",
                "RateLimit-Reset": str(retry_after),
            },
        )
